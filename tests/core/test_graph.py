"""The graph algorithms of change detection, on hand-made graphs and on seeded random ones checked against
brute-force answers (graphs map each node to the nodes it depends on)."""

import random

import pytest

from pipelines_dagster.core.graph import back_edges, find_cycles, nearest_in, reachable, waves

DIAMOND = {"a": set(), "b": {"a"}, "c": {"a", "b"}, "d": {"b", "c"}, "e": set()}


def random_graph(rng: random.Random, nodes: int, edges: int, acyclic: bool) -> dict[str, set[str]]:
    """Nodes n00, n01, ...; an acyclic graph only has edges to nodes of a lower number."""
    names = [f"n{i:02}" for i in range(nodes)]
    graph: dict[str, set[str]] = {n: set() for n in names}
    for _ in range(edges):
        i, j = rng.randrange(nodes), rng.randrange(nodes)
        if acyclic and i <= j:
            continue
        graph[names[i]].add(names[j])
    return graph


def closure(graph) -> dict[str, set[str]]:
    """Every node's transitive dependencies (itself only when it lies on a cycle)."""
    found = {}
    for node in graph:
        seen, stack = set(), list(graph[node])
        while stack:
            dep = stack.pop()
            if dep in graph and dep not in seen:
                seen.add(dep)
                stack.extend(graph[dep])
        found[node] = seen
    return found


def longest_paths(graph) -> dict[str, int]:
    """Length of the longest dependency chain below each node of an acyclic graph (recursive: small graphs)."""
    memo: dict[str, int] = {}

    def depth(node: str) -> int:
        if node not in memo:
            memo[node] = max((depth(d) + 1 for d in graph[node]), default=0)
        return memo[node]
    return {n: depth(n) for n in graph}


def is_cycle(path: list[str], graph) -> bool:
    return len(set(path)) == len(path) and all(path[(i + 1) % len(path)] in graph[path[i]] for i in range(len(path)))


SEEDS = range(40)


# ---- waves


def test_waves_follow_dependencies_through_diamonds():
    assert waves(DIAMOND) == ({"a": 0, "b": 1, "c": 2, "d": 3, "e": 0}, True)


@pytest.mark.parametrize("seed", SEEDS)
def test_waves_are_longest_dependency_chains(seed):
    rng = random.Random(seed)
    graph = random_graph(rng, rng.randint(1, 30), rng.randint(0, 80), acyclic=True)
    assert waves(graph) == (longest_paths(graph), True)


def test_deploy_order_tiers_are_barriers():
    """A higher tier starts after the whole lower tier, even without a dependency on it."""
    tiers = {"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0, "e": 2.0}
    ordered, kept = waves(DIAMOND, tiers)
    assert kept and ordered == {"a": 0, "b": 1, "c": 2, "d": 3, "e": 4}
    # three tiers of independent nodes: one wave each, lowest first; an unordered account (inf) last
    flat = {"x": set(), "y": set(), "z": set(), "w": set()}
    assert waves(flat, {"x": 2.0, "y": 1.0, "z": 1.0, "w": float("inf")}) == ({"x": 1, "y": 0, "z": 0, "w": 2}, True)


@pytest.mark.parametrize("seed", SEEDS)
def test_tiers_consistent_with_dependencies_are_kept(seed):
    rng = random.Random(seed)
    graph = random_graph(rng, rng.randint(1, 30), rng.randint(0, 60), acyclic=True)
    # a node's tier is at least its dependencies' tiers: n00.. are dependencies of higher-numbered nodes
    tiers, level = {}, 0.0
    for node in sorted(graph):
        level += rng.choice([0.0, 0.0, 1.0])
        tiers[node] = level
    ordered, kept = waves(graph, tiers)
    assert kept
    for node, deps in graph.items():
        assert all(ordered[node] > ordered[d] for d in deps)
    for a in graph:
        for b in graph:
            if tiers[a] < tiers[b]:
                assert ordered[a] < ordered[b]
    # no wave is wasted: every wave from 0 to the last holds a node
    assert set(ordered.values()) == set(range(max(ordered.values()) + 1))


def test_a_tier_conflict_falls_back_to_dependency_order():
    """b depends on a, but a's account deploys later: the tiers cannot hold, dependency order is used."""
    graph = {"a": set(), "b": {"a"}, "c": set()}
    assert waves(graph, {"a": 2.0, "b": 1.0, "c": 1.0}) == ({"a": 0, "b": 1, "c": 0}, False)


def test_a_cycle_is_broken_and_the_rest_ordered():
    graph = {"a": {"b"}, "b": {"a"}, "c": {"a"}, "d": set(), "e": {"d"}}
    ordered, kept = waves(graph)
    assert kept and ordered == {"a": 0, "b": 1, "c": 1, "d": 0, "e": 1}
    # with tiers, a cycle also means they cannot hold
    assert waves(graph, {n: 1.0 for n in graph}) == (ordered, False)


def test_what_a_cycle_holds_back_comes_after_it():
    """"a" sorts before the cycle it depends on, and still comes after it: cycles are broken, not their dependents;
    "b" depends on "a" and on the cycle {"c", "d"}, which runs first although "b" sorts before it."""
    graph = {"a": {"x"}, "x": {"y"}, "y": {"x"}, "b": {"a", "c"}, "c": {"d"}, "d": {"c"}}
    assert waves(graph) == ({"a": 1, "x": 0, "y": 1, "b": 2, "c": 0, "d": 1}, True)


@pytest.mark.parametrize("seed", SEEDS)
def test_every_node_gets_a_wave_with_cycles(seed):
    rng = random.Random(seed)
    graph = random_graph(rng, rng.randint(1, 25), rng.randint(0, 60), acyclic=False)
    ordered, _ = waves(graph)
    assert set(ordered) == set(graph) and all(w >= 0 for w in ordered.values())
    deps = closure(graph)
    for node in graph:  # outside cycles, dependency order holds
        for dep in graph[node]:
            if node not in deps[dep]:
                assert ordered[node] > ordered[dep]


# ---- cycles


def test_cycles_are_named_from_their_first_unit():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"x": {"x"}, "y": set()}) == [["x"]]
    assert find_cycles(DIAMOND) == []


def test_a_named_cycle_is_a_real_cycle():
    """Always to the first dependency not yet visited, from a, goes a -> b -> c, and c does not depend on a: the
    cycle named is b -> c -> b, not a path that only looks like one."""
    graph = {"a": {"b"}, "b": {"a", "c"}, "c": {"b"}}
    assert find_cycles(graph) == [["b", "c"]]


def test_dependencies_that_are_not_nodes_are_ignored():
    assert find_cycles({"a": {"b", "outside"}, "b": {"a"}}) == [["a", "b"]]


@pytest.mark.parametrize("seed", SEEDS)
def test_one_real_cycle_per_strongly_connected_component(seed):
    rng = random.Random(seed)
    graph = random_graph(rng, rng.randint(1, 25), rng.randint(0, 50), acyclic=False)
    deps = closure(graph)
    components = {frozenset({n} | {m for m in deps[n] if n in deps[m]}) for n in graph if n in deps[n]}
    cycles = find_cycles(graph)
    assert all(is_cycle(c, graph) for c in cycles)
    assert sorted(sorted(c) for c in components) == sorted(
        sorted(next(comp for comp in components if c[0] in comp)) for c in cycles)
    assert find_cycles(graph) == cycles  # stable


# ---- back edges


def test_back_edges_of_a_cycle_and_of_a_tree():
    assert back_edges({"a": ["b"], "b": ["a"]}) == [("b", "a")]
    assert back_edges({"a": ["b", "c"], "b": ["c"], "c": []}) == []
    assert back_edges({"a": ["a"]}) == [("a", "a")]


@pytest.mark.parametrize("seed", SEEDS)
def test_removing_back_edges_leaves_an_acyclic_graph(seed):
    rng = random.Random(seed)
    graph = {n: sorted(ds) for n, ds in random_graph(rng, rng.randint(1, 25), rng.randint(0, 60),
                                                     acyclic=False).items()}
    cut = back_edges(graph)
    rest = {n: {d for d in ds if (n, d) not in cut} for n, ds in graph.items()}
    assert find_cycles(rest) == []
    assert len(set(cut)) == len(cut) and all(d in graph[n] for n, d in cut)
    if not find_cycles({n: set(ds) for n, ds in graph.items()}):
        assert cut == []


# ---- reachability and nearest changed dependencies


def test_reachable_follows_dependencies_transitively():
    graph = {"app": ["db", "not-a-unit"], "db": ["vpc"], "vpc": [], "other": ["vpc"], "x": ["y"], "y": ["x"]}
    assert reachable(["app"], graph) == {"app", "db", "vpc"}
    assert reachable(["x", "nowhere"], graph) == {"x", "y"}
    assert reachable([], graph) == set()


@pytest.mark.parametrize("seed", SEEDS)
def test_reachable_matches_the_closure(seed):
    rng = random.Random(seed)
    graph = random_graph(rng, rng.randint(1, 25), rng.randint(0, 50), acyclic=False)
    start = set(rng.sample(sorted(graph), rng.randint(0, len(graph))))
    deps = closure(graph)
    assert reachable(start, graph) == start.union(*(deps[s] for s in start))


def test_nearest_changed_dependencies_look_through_unchanged_units():
    # app -> cache (unchanged) -> db (changed); app -> dns (unchanged, leads to nothing changed); a self-reference
    graph = {"app": ["cache", "dns", "app"], "cache": ["db"], "db": ["vpc"], "vpc": [], "dns": ["not-a-unit"],
             "loop1": ["loop2"], "loop2": ["loop1", "vpc"], "edge": ["loop1"]}
    assert nearest_in({"app", "db", "vpc"}, graph) == {"app": {"db"}, "db": {"vpc"}, "vpc": set()}
    # an unchanged cycle on the way is walked once
    assert nearest_in({"edge", "vpc"}, graph) == {"edge": {"vpc"}, "vpc": set()}


@pytest.mark.parametrize("seed", SEEDS)
def test_nearest_changed_dependencies_match_brute_force(seed):
    rng = random.Random(seed)
    graph = random_graph(rng, rng.randint(1, 25), rng.randint(0, 50), acyclic=False)
    changed = set(rng.sample(sorted(graph), rng.randint(1, len(graph))))

    def expected(node: str) -> set[str]:
        """Changed nodes reached by a path whose inner nodes are all unchanged."""
        found, seen, stack = set(), {node}, list(graph[node])
        while stack:
            dep = stack.pop()
            if dep not in seen:
                seen.add(dep)
                if dep in changed:
                    found.add(dep)
                else:
                    stack.extend(graph[dep])
        return found - {node}
    assert nearest_in(changed, graph) == {n: expected(n) for n in changed}


# ---- size


def test_deep_graphs_need_no_recursion():
    """A chain of 20,000 units (and a cycle through all of them) is handled without recursion limits."""
    count = 20_000
    chain = {f"u{i}": {f"u{i - 1}"} if i else set() for i in range(count)}
    assert waves(chain)[0][f"u{count - 1}"] == count - 1
    assert reachable([f"u{count - 1}"], chain) == set(chain)
    assert nearest_in({f"u{count - 1}", "u0"}, chain) == {f"u{count - 1}": {"u0"}, "u0": set()}
    ring = dict(chain, u0={f"u{count - 1}"})
    cycles = find_cycles(ring)
    assert len(cycles) == 1 and len(cycles[0]) == count and is_cycle(cycles[0], ring)
    assert len(back_edges(ring)) == 1
    assert len(waves(ring)[0]) == count
