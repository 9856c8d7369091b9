"""HCL reading with tree-sitter-hcl: one file -> the facts change detection needs, as plain JSON-able data.

Facts do not depend on where a file is evaluated from (Terragrunt evaluates an included file in the context of
the including unit), so they are cached by git blob id. Expressions are kept as a small tuple-free IR:
  ["lit", v] | ["tpl", [parts]] | ["var", name] | ["attr", e, name] | ["idx", e, k] | ["call", name, [args]]
  | ["tuple", [e]] | ["obj", [[k, v]]] | ["cond", c, a, b] | ["bin", op, a, b] | ["un", op, a]
  | ["unk", text] | ["unk", text, reason]
Files come from whoever can push a branch: a file larger than MAX_FILE_BYTES is not parsed, and an expression
nested deeper than MAX_EXPR_DEPTH, or beyond the file's first MAX_EXPRESSIONS, becomes ["unk", text, reason]
(so no recursion limit is reached and the facts stay small). Walks over the syntax tree are linear.
"""

import tree_sitter
import tree_sitter_hcl

LANGUAGE = tree_sitter.Language(tree_sitter_hcl.language())
_PARSER = tree_sitter.Parser(LANGUAGE)

# Functions whose argument names a file the configuration depends on.
READ_FUNCTIONS = frozenset({"read_terragrunt_config", "file", "templatefile", "filebase64", "sops_decrypt_file",
                            "read_tfvars_file", "filesha256", "filemd5"})
FACTS_VERSION = 5
# tree-sitter needs up to about 3 s for 1 MiB of garbage; real configuration files are far smaller
MAX_FILE_BYTES = 1 << 20
MAX_EXPR_DEPTH = 64  # nesting levels (parentheses, collections, calls, operators) converted per expression
MAX_EXPRESSIONS = 100_000  # expressions converted per file (nested file() calls would repeat their arguments)


def _text(node) -> str:
    return node.text.decode("utf-8", errors="replace")


def _literal(node) -> str:
    """Template literal text with HCL's escapes undone: `$${` and `%%{` stand for `${` and `%{`."""
    return _text(node).replace("$${", "${").replace("%%{", "%{")


def _string_lit(node) -> str:
    return "".join(_literal(c) for c in node.children if c.type == "template_literal")


# every recursion of the conversion passes through one of these
_NESTING = frozenset({"expression", "binary_operation", "unary_operation"})


class _Converter:
    """Syntax nodes of one file -> IR. Snippets read only a bounded prefix of a node's text."""

    def __init__(self, source: bytes):
        self.source = source
        self.budget = MAX_EXPRESSIONS

    def snippet(self, node, limit: int = 160) -> str:
        end = min(node.end_byte, node.start_byte + 8 * limit)
        text = " ".join(self.source[node.start_byte:end].decode("utf-8", errors="replace").split())
        return text if len(text) <= limit and end == node.end_byte else text[:limit - 3] + "..."

    def site(self, expr_node) -> dict:
        return {"expr": self.expr(expr_node), "line": expr_node.start_point[0] + 1, "text": self.snippet(expr_node)}

    def chain(self, nodes: list, whole, depth: int) -> list:
        """A primary expression followed by its postfix `.attr` and `[index]` nodes (tree-sitter keeps them
        siblings)."""
        if not nodes:
            return ["unk", self.snippet(whole)]
        value = self.expr(nodes[0], depth)
        for postfix in nodes[1:]:
            if postfix.type == "get_attr":
                ident = next((c for c in postfix.children if c.type == "identifier"), None)
                value = ["attr", value, _text(ident)] if ident else ["unk", self.snippet(whole)]
            elif postfix.type == "index":
                inner = postfix.children[0] if postfix.children else None
                key = next((c for c in inner.children if c.type == "expression"), None) if inner else None
                if inner is not None and inner.type == "legacy_index":
                    digits = "".join(ch for ch in _text(inner) if ch.isdigit())
                    value = ["idx", value, ["lit", int(digits or 0)]]
                elif key is not None:
                    value = ["idx", value, self.expr(key, depth)]
                else:
                    return ["unk", self.snippet(whole)]
            else:  # splats and anything newer than this reader
                return ["unk", self.snippet(whole)]
        return value

    def expr(self, node, depth: int = 0) -> list:
        """Convert an `expression` (or any expression-like node) to IR; `depth` counts enclosing expressions."""
        t = node.type
        if t in _NESTING:
            self.budget -= 1
            if depth >= MAX_EXPR_DEPTH or self.budget < 0:
                why = f"nested more than {MAX_EXPR_DEPTH} levels deep" if depth >= MAX_EXPR_DEPTH else \
                    f"beyond the first {MAX_EXPRESSIONS:,} expressions of the file"
                return ["unk", self.snippet(node), f"expression {why} at line {node.start_point[0] + 1}"]
            depth += 1
        convert = _CONVERTERS.get(t)
        converted = convert(self, node, depth) if convert is not None else None
        if converted is not None:
            return converted
        if t in ("numeric_lit", "bool_lit", "null_lit", "string_lit"):
            return _expr_from_literal(node)
        return ["unk", self.snippet(node)]

    def _expression(self, node, depth: int) -> list:
        return self.chain([c for c in node.children if c.is_named and c.type != "comment"], node, depth)

    def _literal_value(self, node, depth: int) -> list:
        inner = node.children[0]
        if inner.type == "numeric_lit":
            raw = _text(inner)
            for number in (int, float):
                try:
                    return ["lit", number(raw)]
                except ValueError:
                    pass
            return ["unk", raw[:160]]
        if inner.type in ("bool_lit", "null_lit", "string_lit"):
            return _expr_from_literal(inner)
        return ["unk", self.snippet(node)]

    def _first_child(self, node, depth: int) -> list:
        return self.expr(node.children[0], depth)

    def _template(self, node, depth: int) -> list:
        parts: list = []
        literals = [c for c in node.children if c.type == "template_literal"]
        for child in node.children:
            if child.type == "template_literal":
                parts.append(["lit", _literal(child)])
            elif child.type == "template_interpolation":
                inner = next((c for c in child.children if c.type == "expression"), None)
                parts.append(self.expr(inner, depth) if inner is not None else ["unk", self.snippet(child)])
            elif child.type == "template_directive":
                return ["unk", self.snippet(node)]
        if node.type == "heredoc_template":
            # indented heredocs (<<-) strip common leading whitespace; paths never come from heredocs in practice
            if any(c.type == "heredoc_start" and b"-" in c.text for c in node.children) and literals:
                return ["unk", self.snippet(node)]
        return ["tpl", parts]

    def _variable(self, node, depth: int) -> list:
        return ["var", _text(node.children[0])]

    def _function_call(self, node, depth: int) -> list:
        name = _text(node.children[0])
        args_node = next((c for c in node.children if c.type == "function_arguments"), None)
        args = []
        if args_node is not None:
            if any(c.type in ("ellipsis", "...") for c in args_node.children):
                return ["unk", self.snippet(node)]
            args = [self.expr(c, depth) for c in args_node.children if c.type == "expression"]
        return ["call", name, args]

    def _tuple(self, node, depth: int) -> list:
        return ["tuple", [self.expr(c, depth) for c in node.children if c.type == "expression"]]

    def _object(self, node, depth: int) -> list:
        items = []
        for elem in node.children:
            if elem.type != "object_elem":
                continue
            exprs = [c for c in elem.children if c.type == "expression"]
            if len(exprs) != 2:
                return ["unk", self.snippet(node)]
            key = self.expr(exprs[0], depth)
            if key[0] == "var":  # bare identifier keys are literal names
                key = ["lit", key[1]]
            items.append([key, self.expr(exprs[1], depth)])
        return ["obj", items]

    def _conditional(self, node, depth: int) -> list | None:
        exprs = [c for c in node.children if c.type == "expression"]
        if len(exprs) != 3:
            return None
        return ["cond", self.expr(exprs[0], depth), self.expr(exprs[1], depth), self.expr(exprs[2], depth)]

    def _binary(self, node, depth: int) -> list | None:
        split = next((i for i, c in enumerate(node.children) if not c.is_named and c.type != "comment"), None)
        if split is None:
            return None
        left = [c for c in node.children[:split] if c.is_named and c.type != "comment"]
        right = [c for c in node.children[split + 1:] if c.is_named and c.type != "comment"]
        return ["bin", _text(node.children[split]), self.chain(left, node, depth), self.chain(right, node, depth)]

    def _unary(self, node, depth: int) -> list | None:
        ops = [c for c in node.children if not c.is_named]
        operand = [c for c in node.children if c.is_named and c.type != "comment"]
        return ["un", _text(ops[0]), self.chain(operand, node, depth)] if ops else None

    def _parenthesized(self, node, depth: int) -> list | None:
        inner = next((c for c in node.children if c.type == "expression"), None)
        return self.expr(inner, depth) if inner is not None else None


_CONVERTERS = {
    "expression": _Converter._expression, "literal_value": _Converter._literal_value,
    "template_expr": _Converter._first_child, "quoted_template": _Converter._template,
    "heredoc_template": _Converter._template, "variable_expr": _Converter._variable,
    "function_call": _Converter._function_call, "collection_value": _Converter._first_child, "tuple": _Converter._tuple,
    "object": _Converter._object, "conditional": _Converter._conditional, "operation": _Converter._first_child,
    "binary_operation": _Converter._binary, "unary_operation": _Converter._unary,
    "parenthesized_expression": _Converter._parenthesized,
}


def _expr_from_literal(node) -> list:
    if node.type == "string_lit":
        return ["lit", _string_lit(node)]
    if node.type == "bool_lit":
        return ["lit", _text(node) == "true"]
    if node.type == "null_lit":
        return ["lit", None]
    return ["lit", float(_text(node)) if "." in _text(node) else int(_text(node))]


def _attributes(body) -> dict:
    out: dict[str, tree_sitter.Node] = {}
    if body is None:
        return out
    for child in body.children:
        if child.type == "attribute":
            name = _text(child.children[0])
            value = next((c for c in child.children if c.type == "expression"), None)
            if value is not None:
                out[name] = value
    return out


def _blocks(body):
    if body is None:
        return
    for child in body.children:
        if child.type == "block":
            name = _text(child.children[0])
            labels = [_string_lit(c) if c.type == "string_lit" else _text(c)
                      for c in child.children[1:] if c.type in ("string_lit", "identifier")]
            inner = next((c for c in child.children if c.type == "body"), None)
            yield name, labels, inner, child


def _first_error(node, conv: _Converter):
    """(line, column, description) of the first syntax error below node."""
    stack = [node]
    while stack:
        current = stack.pop()
        if current.is_error or current.is_missing:
            what = f"missing {current.type!r}" if current.is_missing else f"unexpected {conv.snippet(current, 40)!r}"
            return current.start_point[0] + 1, current.start_point[1] + 1, what
        if current.has_error:
            stack.extend(reversed(current.children))
    return None


def _empty_facts() -> dict:
    return {"v": FACTS_VERSION, "locals": {}, "local_lines": {}, "includes": [], "dependencies": [],
            "dependencies_paths": [], "source": None, "backend": False, "modules": [], "reads": [],
            "syntax_error": None}


def parse_facts(source: bytes) -> dict:
    """Everything change detection reads from one .hcl or .tf file."""
    facts = _empty_facts()
    if len(source) > MAX_FILE_BYTES:
        facts["syntax_error"] = {"line": 1, "col": None, "message": (
            f"file is {len(source):,} bytes; change detection reads .hcl and .tf files of at most "
            f"{MAX_FILE_BYTES:,} bytes")}
        return facts
    conv = _Converter(source)
    tree = _PARSER.parse(source)
    root = tree.root_node
    if root.has_error:
        err = _first_error(root, conv)
        if err:
            facts["syntax_error"] = {"line": err[0], "col": err[1], "message": f"syntax error: {err[2]}"}
    body = next((c for c in root.children if c.type == "body"), None)
    for name, labels, inner, _block in _blocks(body):
        attrs = _attributes(inner)
        if name == "locals":
            for key, value in attrs.items():
                facts["locals"][key] = conv.expr(value)
                facts["local_lines"][key] = value.start_point[0] + 1
        elif name == "include":
            if "path" in attrs:
                site = conv.site(attrs["path"])
                site["name"] = labels[0] if labels else ""
                site["expose"] = _text(attrs["expose"]).strip() == "true" if "expose" in attrs else False
                facts["includes"].append(site)
        elif name == "dependency":
            if "config_path" in attrs:
                site = conv.site(attrs["config_path"])
                site["name"] = labels[0] if labels else ""
                facts["dependencies"].append(site)
        elif name == "dependencies":
            if "paths" in attrs:
                facts["dependencies_paths"].append(conv.site(attrs["paths"]))
        elif name == "terraform":
            if "source" in attrs:
                facts["source"] = conv.site(attrs["source"])
            for sub_name, _, _, _ in _blocks(inner):
                if sub_name in ("backend", "cloud"):
                    facts["backend"] = True
        elif name == "module":
            if "source" in attrs:
                site = conv.site(attrs["source"])
                site["name"] = labels[0] if labels else ""
                facts["modules"].append(site)
    for call in _function_calls(root):
        if _text(call.children[0]) in READ_FUNCTIONS:
            facts["reads"].append(conv.site(call))
            if conv.budget < 0:  # its argument is unknown: one such site makes the unit conservative
                break
    return facts


def _function_calls(root) -> list:
    """Every function call, in a linear walk (a tree-sitter query, like Node.parent, takes time quadratic in the
    nesting depth)."""
    found = []
    cursor = root.walk()
    while True:
        node = cursor.node
        if node.type == "function_call":
            found.append(node)
        if cursor.goto_first_child():
            continue
        while not cursor.goto_next_sibling():
            if not cursor.goto_parent():
                return found
