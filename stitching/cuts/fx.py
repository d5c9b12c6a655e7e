"""Generic fallback: cut any torch.fx-traceable model at its top-level module boundaries.

Top-level modules (and the children of top-level ``nn.Sequential``/``nn.ModuleList`` containers, recursively)
are traced as leaves, so only the model's own forward must be traceable. A cut falls after such a module when
its output is the only activation that the rest of the graph reads (parameters are re-read, not carried), and
when that output is a feature map (4-d) or token sequence (3-d). The graph is then sliced into consecutive
``GraphModule`` stages that share the model's modules and parameters.
"""

from __future__ import annotations

import inspect

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from stitching.cuts._registry import Stage

_CONTAINERS = (nn.Sequential, nn.ModuleList)
# Shape guards on the input (ViT patch embeds) would keep the input alive past every cut: drop them.
_ASSERTS = {torch._assert, getattr(fx._symbolic_trace, "_assert_is_none", None)} - {None}


class FxTraceError(RuntimeError):
    """The model's forward cannot be traced by torch.fx."""


class _TopLevelTracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        # Only top-level modules and members of containers are ever reached: everything else is inside a leaf.
        return not isinstance(m, _CONTAINERS)


def _trace(model: nn.Module) -> fx.GraphModule:
    params = list(inspect.signature(model.forward).parameters.values())[1:]
    concrete = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    try:
        graph = _TopLevelTracer().trace(model, concrete_args=concrete or None)
    except Exception as e:  # fx raises TraceError, TypeError, AttributeError, ... depending on the model code
        raise FxTraceError(f"{type(e).__name__}: {e}") from e
    gm = fx.GraphModule(model, graph)
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target in _ASSERTS:
            graph.erase_node(node)
    graph.eliminate_dead_code()
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    for extra in inputs[1:]:  # extra inputs fixed to their defaults (attn_mask=None, is_causal=False)
        if extra.users:
            raise FxTraceError(f"the forward reads its extra input {extra.target!r} as a value")
        graph.erase_node(extra)
    gm.recompile()
    return gm


def _cut_nodes(gm: fx.GraphModule, ndims: tuple[int, ...]) -> list[fx.Node]:
    nodes = list(gm.graph.nodes)
    last_use = {n: max((nodes.index(u) for u in n.users), default=-1) for n in nodes}
    cuts = []
    for i, node in enumerate(nodes):
        if node.op != "call_module":
            continue
        live = [n for n in nodes[: i + 1] if n.op != "get_attr" and last_use[n] > i]
        meta = node.meta.get("tensor_meta")
        if (
            live == [node]
            and isinstance(meta, fx.passes.shape_prop.TensorMetadata)
            and len(meta.shape) in ndims
        ):
            cuts.append(node)
    return cuts


def _coarsest(model: nn.Module, path: str) -> str:
    """Name a cut after the largest container ending with module ``path`` (``stages.0.1`` -> ``stages.0``)."""
    while "." in path:
        parent_path, child = path.rsplit(".", 1)
        parent = model.get_submodule(parent_path)
        if parent_path.count(".") == 0 or list(parent._modules)[-1] != child:
            break  # keep top-level containers split (``stages.3``, not ``stages``)
        path = parent_path
    return path


def _segment(gm: fx.GraphModule, nodes: list[fx.Node], start: fx.Node | None) -> fx.GraphModule:
    """A GraphModule computing ``nodes`` from the value of ``start`` (the model input if None)."""
    graph = fx.Graph()
    x = graph.placeholder("x")
    env: dict[fx.Node, fx.Node] = {}

    def lookup(n: fx.Node) -> fx.Node:
        if n not in env:  # a parameter read before the cut: read it again here
            assert n.op == "get_attr", f"fx segment reads {n} across a cut"
            env[n] = graph.node_copy(n)
        return env[n]

    for n in gm.graph.nodes:
        if n.op == "placeholder" and start is None:
            env[n] = x
    if start is not None:
        env[start] = x
    out = None
    for n in nodes:
        if n.op == "output":
            graph.node_copy(n, lookup)
            return fx.GraphModule(gm, graph)
        env[n] = out = graph.node_copy(n, lookup)
    graph.output(out)
    return fx.GraphModule(gm, graph)


def fx_stages(model: nn.Module, input_size: tuple[int, ...]) -> list[Stage]:
    """Slice a traceable model into stages at its top-level module boundaries (see the module docstring)."""
    gm = _trace(model)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        ShapeProp(gm).propagate(torch.zeros(1, *input_size))
    model.train(was_training)
    # timm's channels-last models (swin, mambaout) say so; their 4-d activations are NHWC: not offered.
    ndims = (3,) if getattr(model, "output_fmt", "NCHW") == "NHWC" else (3, 4)
    cuts = _cut_nodes(gm, ndims)
    if not cuts:
        raise FxTraceError("the traced graph has no point where a single feature map or token tensor flows")
    nodes = [n for n in gm.graph.nodes if n.op != "placeholder"]
    stages, start, begin = [], None, 0
    for cut in cuts:
        end = nodes.index(cut) + 1
        stages.append(Stage(_coarsest(model, str(cut.target)), _segment(gm, nodes[begin:end], start)))
        start, begin = cut, end
    stages.append(Stage("head", _segment(gm, nodes[begin:], start), cut=False))
    return stages
