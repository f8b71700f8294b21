"""The toy model: procedurally rendered "puppets" (``puppet``, ``dance``, ``samples``), a tiny
MimicMotion trained on them (``train``), and its committed weights (``weights/``, the ``toy`` preset)."""
