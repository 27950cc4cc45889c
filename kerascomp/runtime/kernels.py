"""Where a LiteRT interpreter runs each node: XNNPACK partitions, and the ops left to built-in kernels.

Read from the interpreter's node list, the only view of the graph after
delegation that the Python API gives; it has no per-op timing.
"""

from __future__ import annotations

import collections

__all__ = ["kernel_record"]


def kernel_record(interpreter, op_resolver: str) -> dict:
    """Where every node runs: the kernel path, the XNNPACK partitions, and the ops left outside them.

    A slow file says why here: an int8 graph cut into several partitions pays a
    hand-over at each cut, and an op outside every partition runs the built-in
    (or reference) kernel. Measured from the nodes for ``"auto"``; with a fixed
    resolver no delegate is applied and every node is outside.

    A delegate replaces its nodes with one ``DELEGATE`` node whose inputs and
    outputs are the boundary tensors of the replaced partition, while the
    original nodes stay listed. Walking the graph backwards, a node was
    delegated if it produces a delegate output, or feeds a delegated node
    through a tensor that is not a delegate input (so internal to a partition).
    """
    ops = interpreter._get_ops_details()  # the only view of the node list in the Python API
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"] if op_resolver == "auto" else []
    nodes = [op for op in ops if op["op_name"] != "DELEGATE"]
    delegated = _delegated(nodes, delegates)
    outside = collections.Counter(op["op_name"] for op in nodes if op["index"] not in delegated)
    if op_resolver != "auto":
        path = op_resolver
    else:
        path = "builtin" if not delegates else "xnnpack" if not outside else "xnnpack+builtin"
    return {"path": path, "partitions": len(delegates), "nodes": len(nodes), "delegated_nodes": len(delegated),
            "ops": dict(collections.Counter(op["op_name"] for op in nodes)), "outside_ops": dict(outside)}


def _delegated(nodes: list[dict], delegates: list[dict]) -> set[int]:
    """Indices of the nodes some delegate partition took."""
    if not delegates:
        return set()
    delegate_in = {int(t) for op in delegates for t in op["inputs"]}
    delegate_out = {int(t) for op in delegates for t in op["outputs"]}
    consumers: dict[int, list[int]] = {}
    for op in nodes:
        for t in op["inputs"]:
            consumers.setdefault(int(t), []).append(op["index"])
    delegated: set[int] = set()
    for op in reversed(nodes):
        outputs = {int(t) for t in op["outputs"]}
        internal = outputs - delegate_in
        if outputs & delegate_out or any(c in delegated for t in internal for c in consumers.get(t, ())):
            delegated.add(op["index"])
    return delegated
