"""Values of static evaluation: what is known (strings, numbers, bools, null, lists and maps whose size and depth
are known), `Unknown` (what cannot be known statically, and why), and `Limit` (an Unknown because a value would
exceed a bound: larger than MAX_VALUE_SIZE, nested deeper than MAX_VALUE_DEPTH, a number beyond MAX_NUMBER_BITS)."""

MAX_VALUE_SIZE = 1_000_000  # characters of a string; elements plus characters of a collection
MAX_VALUE_DEPTH = 32  # lists and maps inside lists and maps
MAX_NUMBER_BITS = 512  # Terraform's numbers have 512 bits of precision


class Unknown:
    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason

    def __repr__(self) -> str:
        return f"Unknown({self.reason})"


class Limit(Unknown):
    """Unknown because evaluating it would exceed a bound; `located` once the reason names where."""

    __slots__ = ("located",)

    def __init__(self, reason: str, located: bool = False):
        super().__init__(reason)
        self.located = located


class EvalError(Exception):
    """The configuration is wrong (not merely unknowable): a missing included file, a path escaping the repo."""


class SizedList(list):
    """A list whose size (elements and characters, nested ones included) and depth (levels of collections) are
    known."""

    __slots__ = ("size", "depth")
    size: int
    depth: int


class SizedMap(dict):
    """A map whose size (entries, characters of keys and values, nested ones included) and depth are known."""

    __slots__ = ("size", "depth")
    size: int
    depth: int


TOO_LARGE = f"a value larger than {MAX_VALUE_SIZE:,} elements and characters"
TOO_DEEP = f"a value nested more than {MAX_VALUE_DEPTH} levels deep"


def shorten(value, limit: int = 80) -> str:
    """repr of a value from the repository, shortened for messages."""
    text = repr(value) if not isinstance(value, (SizedList, SizedMap)) or len(value) < 20 else \
        f"<{len(value)} elements>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def to_string(value) -> str | Unknown:
    """A primitive value as HCL converts it to a string; Unknown for collections."""
    if isinstance(value, Unknown):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return value
    return Unknown("a collection is not a string")


def measure(value) -> tuple[int, int]:
    """(size, depth) of a value: a collection counts its elements, a string its characters."""
    if isinstance(value, str):
        return len(value), 0
    if isinstance(value, (SizedList, SizedMap)):
        return value.size, value.depth
    return 1, 0


def sized(value, over: int = 0) -> "SizedList | SizedMap | Limit":
    """A list or map (new from evaluation or a function) with its size known, or the Limit it exceeds. Elements
    that are collections are already sized, except a function's own results one level down (regex groups, ...)."""
    is_map = isinstance(value, dict)
    size, depth = len(value), 1
    for key, item in (value.items() if is_map else enumerate(value)):
        if is_map:
            size += len(key) if isinstance(key, str) else 1
        if isinstance(item, (list, dict)) and not isinstance(item, (SizedList, SizedMap)):
            if over >= MAX_VALUE_DEPTH:
                return Limit(TOO_DEEP)
            item = sized(item, over + 1)
            if isinstance(item, Limit):
                return item
            value[key] = item
        if isinstance(item, str):
            size += len(item)
        elif isinstance(item, (SizedList, SizedMap)):
            size += item.size
            depth = max(depth, item.depth + 1)
        if size > MAX_VALUE_SIZE:
            return Limit(TOO_LARGE)
    if depth > MAX_VALUE_DEPTH:
        return Limit(TOO_DEEP)
    result = SizedMap(value) if is_map else SizedList(value)
    result.size, result.depth = size, depth
    return result


def bounded(value):
    """The value, sized, or the Limit it exceeds."""
    if isinstance(value, str):
        if len(value) > MAX_VALUE_SIZE:
            return Limit(f"a string of {len(value):,} characters, more than the {MAX_VALUE_SIZE:,} evaluated")
        return value
    if isinstance(value, int):
        if value.bit_length() > MAX_NUMBER_BITS:
            return Limit(f"a number of more than {MAX_NUMBER_BITS} bits")
        return value
    if isinstance(value, (list, dict)) and not isinstance(value, (SizedList, SizedMap)):
        return sized(value)
    return value
