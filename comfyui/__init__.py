"""The ComfyUI node pack of mimic: MimicMotion nodes over the engine's Python API.

Install: link (or copy) this folder into ``ComfyUI/custom_nodes/`` and ``pip install`` the engine
into ComfyUI's Python (README, "ComfyUI"). ComfyUI imports this folder as a module: the V1 mappings
(``NODE_CLASS_MAPPINGS``, ``NODE_DISPLAY_NAME_MAPPINGS``) and the V3 entry point
(``comfy_entrypoint``) are exported from here; both run the same node code. Importing this needs
neither ComfyUI nor torch (``host.py`` looks ComfyUI up when a node runs).
"""
from .host import register_model_folder
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from .v3 import comfy_entrypoint

register_model_folder()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "comfy_entrypoint"]
