"""Static evaluation of Terragrunt and Terraform configuration, as Terragrunt does it, over a git tree.

Only what decides which files a unit depends on is evaluated: include paths, read_terragrunt_config / file()
arguments, dependency paths, terraform sources and module sources, and the locals they use. Everything else stays
unevaluated. The configuration comes from whoever can push a branch, so parsing and evaluation are bounded in
size, nesting, work and time.

  parse.py        one .hcl/.tf file -> its facts (tree-sitter), expressions as a small IR
  values.py       Unknown, Limit, sized collections: the values evaluation yields, and their bounds
  paths.py        repo-relative and evaluated (absolute) paths, module sources
  tree.py         the tree evaluated, and the inputs one evaluation looked at (for cache reuse)
  functions.py    Terraform's and Terragrunt's functions (regular expressions on RE2)
  interpreter.py  expressions in a scope: locals, includes, configurations read
  traversal.py    UnitEvaluator: one unit's includes, reads, dependencies and module closure
"""
