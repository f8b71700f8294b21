"""ComfyUI's V3 node API (``comfy_api.latest``), derived from the V1 classes in ``nodes.py``: each V3
node's schema is built from the V1 class's ``INPUT_TYPES``/``RETURN_TYPES``/``RETURN_NAMES`` and its
``execute`` calls the V1 class's ``FUNCTION``, so both APIs run the same code. ``comfy_api`` is
imported only when ComfyUI asks for the extension (``comfy_entrypoint``)."""
from __future__ import annotations

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

_STANDARD = {"IMAGE": "Image", "LATENT": "Latent", "MASK": "Mask", "INT": "Int", "FLOAT": "Float", "STRING": "String", "BOOLEAN": "Boolean"}
_WIDGET_OPTIONS = {"default", "min", "max", "step", "multiline", "tooltip"}


def _io_type(io, type_name):
    return getattr(io, _STANDARD[type_name]) if type_name in _STANDARD else io.Custom(type_name)


def v3_input(io, name: str, declaration: tuple, optional: bool):
    """One V1 input ``(TYPE, {options})`` as a V3 input."""
    kind, options = declaration[0], dict(declaration[1]) if len(declaration) > 1 else {}
    options = {k: v for k, v in options.items() if k in _WIDGET_OPTIONS}
    if isinstance(kind, (list, tuple)):
        return io.Combo.Input(name, options=list(kind), optional=optional, **options)
    if kind not in ("INT", "FLOAT", "STRING", "BOOLEAN"):
        options = {k: v for k, v in options.items() if k == "tooltip"}
    return _io_type(io, kind).Input(name, optional=optional, **options)


def v3_node(io, node_id: str, v1):
    """The V3 ``io.ComfyNode`` class running the V1 class ``v1``."""

    class Node(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            declared = v1.INPUT_TYPES()
            inputs = [v3_input(io, name, decl, section == "optional")
                      for section in ("required", "optional") for name, decl in declared.get(section, {}).items()]
            outputs = [_io_type(io, kind).Output(display_name=name) for kind, name in zip(v1.RETURN_TYPES, v1.RETURN_NAMES)]
            return io.Schema(node_id=node_id, display_name=NODE_DISPLAY_NAME_MAPPINGS[node_id], category=v1.CATEGORY,
                             description=getattr(v1, "DESCRIPTION", ""), inputs=inputs, outputs=outputs,
                             is_output_node=getattr(v1, "OUTPUT_NODE", False))

        @classmethod
        def execute(cls, **inputs):
            result = getattr(v1(), v1.FUNCTION)(**inputs)
            if isinstance(result, dict):
                return io.NodeOutput(*result["result"], ui=result.get("ui"))
            return io.NodeOutput(*result)

    if hasattr(v1, "IS_CHANGED"):  # V1's IS_CHANGED is V3's fingerprint_inputs
        Node.fingerprint_inputs = classmethod(lambda cls, **inputs: v1.IS_CHANGED(**inputs))
    Node.__name__ = Node.__qualname__ = f"{node_id}V3"
    return Node


def v3_nodes() -> list:
    from comfy_api.latest import io

    return [v3_node(io, node_id, v1) for node_id, v1 in NODE_CLASS_MAPPINGS.items()]


async def comfy_entrypoint():
    """ComfyUI's V3 entry point: the extension listing the V3 nodes."""
    from comfy_api.latest import ComfyExtension

    class MimicExtension(ComfyExtension):
        async def get_node_list(self):
            return v3_nodes()

    return MimicExtension()
