"""HCL reading with tree-sitter-hcl: one file -> the facts change detection needs, as plain JSON-able data.

Facts do not depend on where a file is evaluated from (Terragrunt evaluates an included file in the context of
the including unit), so they are cached by git blob id. Expressions are kept as a small tuple-free IR:
  ["lit", v] | ["tpl", [parts]] | ["var", name] | ["attr", e, name] | ["idx", e, k] | ["call", name, [args]]
  | ["tuple", [e]] | ["obj", [[k, v]]] | ["cond", c, a, b] | ["bin", op, a, b] | ["un", op, a] | ["unk", text]
"""

import json

import tree_sitter
import tree_sitter_hcl

LANGUAGE = tree_sitter.Language(tree_sitter_hcl.language())
_PARSER = tree_sitter.Parser(LANGUAGE)
_CALLS = tree_sitter.Query(LANGUAGE, "(function_call (identifier) @fn)")

# Functions whose argument names a file the configuration depends on.
READ_FUNCTIONS = frozenset({"read_terragrunt_config", "file", "templatefile", "filebase64", "sops_decrypt_file",
                            "read_tfvars_file", "filesha256", "filemd5"})
FACTS_VERSION = 4


def _text(node) -> str:
    return node.text.decode("utf-8", errors="replace")


def _snippet(node, limit: int = 160) -> str:
    text = " ".join(_text(node).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _literal(node) -> str:
    """Template literal text with HCL's escapes undone: `$${` and `%%{` stand for `${` and `%{`."""
    return _text(node).replace("$${", "${").replace("%%{", "%{")


def _string_lit(node) -> str:
    return "".join(_literal(c) for c in node.children if c.type == "template_literal")


def _chain(nodes: list, whole) -> list:
    """A primary expression followed by its postfix `.attr` and `[index]` nodes (tree-sitter keeps them siblings)."""
    if not nodes:
        return ["unk", _snippet(whole)]
    value = _expr(nodes[0])
    for postfix in nodes[1:]:
        if postfix.type == "get_attr":
            ident = next((c for c in postfix.children if c.type == "identifier"), None)
            value = ["attr", value, _text(ident)] if ident else ["unk", _snippet(whole)]
        elif postfix.type == "index":
            inner = postfix.children[0] if postfix.children else None
            key = next((c for c in inner.children if c.type == "expression"), None) if inner else None
            if inner is not None and inner.type == "legacy_index":
                digits = "".join(ch for ch in _text(inner) if ch.isdigit())
                value = ["idx", value, ["lit", int(digits or 0)]]
            elif key is not None:
                value = ["idx", value, _expr(key)]
            else:
                return ["unk", _snippet(whole)]
        else:  # splats and anything newer than this reader
            return ["unk", _snippet(whole)]
    return value


def _expr(node) -> list:
    """Convert an `expression` (or any expression-like node) to IR."""
    t = node.type
    if t == "expression":
        return _chain([c for c in node.children if c.is_named and c.type != "comment"], node)
    if t == "literal_value":
        inner = node.children[0]
        if inner.type == "numeric_lit":
            raw = _text(inner)
            try:
                return ["lit", int(raw)]
            except ValueError:
                try:
                    return ["lit", float(raw)]
                except ValueError:
                    return ["unk", raw]
        if inner.type == "bool_lit":
            return ["lit", _text(inner) == "true"]
        if inner.type == "null_lit":
            return ["lit", None]
        if inner.type == "string_lit":
            return ["lit", _string_lit(inner)]
        return ["unk", _snippet(node)]
    if t == "template_expr":
        return _expr(node.children[0])
    if t in ("quoted_template", "heredoc_template"):
        parts: list = []
        literals = [c for c in node.children if c.type == "template_literal"]
        for child in node.children:
            if child.type == "template_literal":
                parts.append(["lit", _literal(child)])
            elif child.type == "template_interpolation":
                inner = next((c for c in child.children if c.type == "expression"), None)
                parts.append(_expr(inner) if inner is not None else ["unk", _snippet(child)])
            elif child.type == "template_directive":
                return ["unk", _snippet(node)]
        if t == "heredoc_template":
            # indented heredocs (<<-) strip common leading whitespace; paths never come from heredocs in practice
            if any(c.type == "heredoc_start" and b"-" in c.text for c in node.children) and literals:
                return ["unk", _snippet(node)]
        return ["tpl", parts]
    if t == "variable_expr":
        return ["var", _text(node.children[0])]
    if t == "function_call":
        name = _text(node.children[0])
        args_node = next((c for c in node.children if c.type == "function_arguments"), None)
        args = []
        if args_node is not None:
            if any(c.type in ("ellipsis", "...") for c in args_node.children):
                return ["unk", _snippet(node)]
            args = [_expr(c) for c in args_node.children if c.type == "expression"]
        return ["call", name, args]
    if t == "collection_value":
        return _expr(node.children[0])
    if t == "tuple":
        return ["tuple", [_expr(c) for c in node.children if c.type == "expression"]]
    if t == "object":
        items = []
        for elem in node.children:
            if elem.type != "object_elem":
                continue
            exprs = [c for c in elem.children if c.type == "expression"]
            if len(exprs) != 2:
                return ["unk", _snippet(node)]
            key = _expr(exprs[0])
            if key[0] == "var":  # bare identifier keys are literal names
                key = ["lit", key[1]]
            items.append([key, _expr(exprs[1])])
        return ["obj", items]
    if t == "conditional":
        exprs = [c for c in node.children if c.type == "expression"]
        if len(exprs) == 3:
            return ["cond", _expr(exprs[0]), _expr(exprs[1]), _expr(exprs[2])]
    if t == "operation":
        return _expr(node.children[0])
    if t == "binary_operation":
        split = next((i for i, c in enumerate(node.children) if not c.is_named and c.type != "comment"), None)
        if split is not None:
            left = [c for c in node.children[:split] if c.is_named and c.type != "comment"]
            right = [c for c in node.children[split + 1:] if c.is_named and c.type != "comment"]
            return ["bin", _text(node.children[split]), _chain(left, node), _chain(right, node)]
    if t == "unary_operation":
        ops = [c for c in node.children if not c.is_named]
        operand = [c for c in node.children if c.is_named and c.type != "comment"]
        if ops:
            return ["un", _text(ops[0]), _chain(operand, node)]
    if t in ("parenthesized_expression",):
        inner = next((c for c in node.children if c.type == "expression"), None)
        if inner is not None:
            return _expr(inner)
    if t in ("numeric_lit", "bool_lit", "null_lit", "string_lit"):
        return _expr_from_literal(node)
    return ["unk", _snippet(node)]


def _expr_from_literal(node) -> list:
    if node.type == "string_lit":
        return ["lit", _string_lit(node)]
    if node.type == "bool_lit":
        return ["lit", _text(node) == "true"]
    if node.type == "null_lit":
        return ["lit", None]
    return ["lit", float(_text(node)) if "." in _text(node) else int(_text(node))]


def _site(expr_node) -> dict:
    return {"expr": _expr(expr_node), "line": expr_node.start_point[0] + 1, "text": _snippet(expr_node)}


def _attributes(body) -> dict:
    out = {}
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


def _first_error(node):
    """(line, column, description) of the first syntax error below node."""
    stack = [node]
    while stack:
        current = stack.pop()
        if current.is_error or current.is_missing:
            what = f"missing {current.type!r}" if current.is_missing else f"unexpected {_snippet(current, 40)!r}"
            return current.start_point[0] + 1, current.start_point[1] + 1, what
        if current.has_error:
            stack.extend(reversed(current.children))
    return None


def parse_facts(source: bytes) -> dict:
    """Everything change detection reads from one .hcl or .tf file."""
    tree = _PARSER.parse(source)
    root = tree.root_node
    facts: dict = {"v": FACTS_VERSION, "locals": {}, "includes": [], "dependencies": [], "dependencies_paths": [],
                   "source": None, "backend": False, "modules": [], "reads": [], "syntax_error": None}
    if root.has_error:
        err = _first_error(root)
        if err:
            facts["syntax_error"] = {"line": err[0], "col": err[1], "message": f"syntax error: {err[2]}"}
    body = next((c for c in root.children if c.type == "body"), None)
    for name, labels, inner, block in _blocks(body):
        attrs = _attributes(inner)
        if name == "locals":
            for key, value in attrs.items():
                facts["locals"][key] = _expr(value)
        elif name == "include":
            if "path" in attrs:
                site = _site(attrs["path"])
                site["name"] = labels[0] if labels else ""
                site["expose"] = _text(attrs["expose"]).strip() == "true" if "expose" in attrs else False
                facts["includes"].append(site)
        elif name == "dependency":
            if "config_path" in attrs:
                site = _site(attrs["config_path"])
                site["name"] = labels[0] if labels else ""
                facts["dependencies"].append(site)
        elif name == "dependencies":
            if "paths" in attrs:
                facts["dependencies_paths"].append(_site(attrs["paths"]))
        elif name == "terraform":
            if "source" in attrs:
                facts["source"] = _site(attrs["source"])
            for sub_name, _, _, _ in _blocks(inner):
                if sub_name in ("backend", "cloud"):
                    facts["backend"] = True
        elif name == "module":
            if "source" in attrs:
                site = _site(attrs["source"])
                site["name"] = labels[0] if labels else ""
                facts["modules"].append(site)
    for node in _read_call_names(root):
        fname = _text(node)
        if fname in READ_FUNCTIONS:
            call = node.parent
            facts["reads"].append(_site(call))
    return facts


def _read_call_names(root) -> list:
    return tree_sitter.QueryCursor(_CALLS).captures(root).get("fn", [])


def dumps(facts: dict) -> str:
    return json.dumps(facts, separators=(",", ":"))
