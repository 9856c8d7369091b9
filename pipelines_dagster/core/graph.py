"""Graph algorithms of change detection, on dependency graphs given as `node -> the nodes it depends on`.

Every walk is iterative (graphs of 10,000 units are deep) and visits nodes in a stable order, so that results
and the cycles named in messages do not change from one run to the next.
"""

from collections.abc import Collection, Iterable, Iterator, Mapping

Graph = Mapping[str, Collection[str]]


def reachable(start: Iterable[str], graph: Graph) -> set[str]:
    """The nodes of the graph that `start` reaches through dependencies, `start` included (names that are not
    nodes of the graph are left out)."""
    seen, stack = set(), list(start)
    while stack:
        node = stack.pop()
        if node in seen or node not in graph:
            continue
        seen.add(node)
        stack.extend(graph[node])
    return seen


def nearest_in(subset: set[str], graph: Graph) -> dict[str, set[str]]:
    """For each node of `subset`, the nodes of `subset` it depends on, looking through nodes outside it (a
    changed unit depends on a changed unit through unchanged ones)."""
    found_by_node: dict[str, set[str]] = {}
    for node in subset:
        direct = graph.get(node, ())
        if all(d in subset for d in direct):  # the common case: nothing to look through
            found_by_node[node] = set(direct) - {node}
            continue
        found: set[str] = set()
        seen = {node}
        stack = list(direct)
        while stack:
            dep = stack.pop()
            if dep in seen:
                continue
            seen.add(dep)
            if dep in subset:
                found.add(dep)
            else:
                stack.extend(graph.get(dep, ()))
        found_by_node[node] = found
    return found_by_node


def waves(graph: Graph, tiers: Mapping[str, float] | None = None) -> tuple[dict[str, int], bool]:
    """The wave of each node (every dependency must be a node): 1 + the latest wave of its dependencies and, with
    `tiers`, later than every node of a lower tier (an account's deploy_order). Returns the waves and whether the
    tiers were kept: when they conflict with the dependencies (or there is a cycle), dependency order alone is
    used. Cycles are broken (see _waves_breaking_cycles); every dependency between nodes that are not on one cycle
    is kept."""
    if tiers is not None:
        tiered = _tiered_waves(graph, tiers)
        if tiered is not None:
            return tiered, True
    ordered = _dependency_waves(graph)
    if ordered is None:
        ordered = _waves_breaking_cycles(graph)
    return ordered, tiers is None


def _dependency_waves(graph: Graph) -> dict[str, int] | None:
    """1 + the latest wave among a node's dependencies (iterative depth-first); None on a cycle."""
    wave: dict[str, int] = {}
    for root in graph:
        if root in wave:
            continue
        stack, on_path = [root], {root}
        while stack:
            node = stack[-1]
            pending = next((d for d in graph[node] if d not in wave), None)
            if pending is not None:
                if pending in on_path:
                    return None
                stack.append(pending)
                on_path.add(pending)
                continue
            stack.pop()
            on_path.discard(node)
            if node not in wave:
                wave[node] = max((wave[d] + 1 for d in graph[node]), default=0)
    return wave


def _tiered_waves(graph: Graph, tiers: Mapping[str, float]) -> dict[str, int] | None:
    """Waves by Kahn's algorithm, with each tier behind a barrier that waits for the tier below; None when some
    nodes cannot be ordered."""
    nodes = list(graph)
    deps: dict[str, set[str]] = {n: set(graph[n]) for n in nodes}
    levels = sorted(set(tiers.values()))
    for i, level in enumerate(levels):
        barrier = f"\0barrier{i}"
        deps[barrier] = {n for n in nodes if tiers[n] == level}
        if i > 0:
            deps[barrier].add(f"\0barrier{i - 1}")
            for n in nodes:
                if tiers[n] == level:
                    deps[n].add(f"\0barrier{i - 1}")
    remaining = {n: len(d) for n, d in deps.items()}
    dependents: dict[str, list[str]] = {n: [] for n in deps}
    for n, ds in deps.items():
        for d in ds:
            dependents[d].append(n)
    wave: dict[str, int] = {}
    ready = sorted(n for n, k in remaining.items() if k == 0)
    while ready:
        n = ready.pop()
        own = 0
        for d in deps[n]:
            if d in wave:
                own = max(own, wave[d] + (0 if d.startswith("\0") else 1))
        wave[n] = own
        for m in dependents[n]:
            remaining[m] -= 1
            if remaining[m] == 0:
                ready.append(m)
    if len(wave) < len(deps):
        return None
    return {n: wave[n] for n in nodes}


def _waves_breaking_cycles(graph: Graph) -> dict[str, int]:
    """Waves of a graph with cycles: its strongly connected components in dependency order, and inside one,
    Kahn's order; where that is stuck, the first stuck node in sorted order goes next, after those of its
    dependencies that have a wave already."""
    wave: dict[str, int] = {}
    for component in _components(graph):
        members = set(component)
        remaining = {n: 0 for n in component}
        dependents: dict[str, list[str]] = {n: [] for n in component}
        for n in component:
            for d in graph[n]:
                if d in members:
                    remaining[n] += 1
                    dependents[d].append(n)
        ready = [n for n in component if remaining[n] == 0]
        while True:
            while ready:
                n = ready.pop()
                wave[n] = max((wave[d] + 1 for d in graph[n] if d in wave), default=0)
                for m in dependents[n]:
                    remaining[m] -= 1
                    if remaining[m] == 0:
                        ready.append(m)
            stuck = next((n for n in component if n not in wave), None)
            if stuck is None:
                break
            remaining[stuck] = 0
            ready.append(stuck)
    return {n: wave[n] for n in graph}


def find_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (or a self-loop), each as a readable cycle: a path
    from its first node in sorted order."""
    return [_cycle_path(component, graph) for component in _components(graph)
            if len(component) > 1 or component[0] in graph[component[0]]]


def _components(graph: Mapping[str, Collection[str]]) -> Iterator[list[str]]:
    """Strongly connected components, each sorted, dependencies before their dependents (Tarjan's algorithm,
    iterative, in sorted order); dependencies that are not nodes are ignored."""
    index_of: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    counter = 0
    for root in sorted(graph):
        if root in index_of:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index_of[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in graph:
                    continue
                if child not in index_of:
                    index_of[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index_of[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index_of[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                yield sorted(component)


def _cycle_path(component: list[str], graph: Mapping[str, set[str]]) -> list[str]:
    """A cycle of the component: from its first node, always to the first dependency not yet on the path, until
    none is left; the last node depends on a node of the path (the component is strongly connected), and the
    path from there is the cycle (usually the whole path: the last node depends on the first)."""
    members = set(component)
    path = [component[0]]
    position = {component[0]: 0}
    while True:
        nxt = sorted(d for d in graph[path[-1]] if d in members)
        step = next((d for d in nxt if d not in position), None)
        if step is None:
            return path[min(position[d] for d in nxt):]
        position[step] = len(path)
        path.append(step)


def back_edges(graph: Mapping[str, Collection[str]]) -> list[tuple[str, str]]:
    """Edges whose removal leaves the graph acyclic: the back edges of a depth-first search in the graph's order."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    back: list[tuple[str, str]] = []
    for root in graph:
        if root in state:
            continue
        state[root] = 1
        stack = [(root, iter(graph[root]))]
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
            elif state.get(child) == 1:
                back.append((node, child))
            elif child not in state:
                state[child] = 1
                stack.append((child, iter(graph[child])))
    return back
