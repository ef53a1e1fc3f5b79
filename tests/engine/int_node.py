"""The shape most of the engine tests' small nodes share (imported by conftest and the test files)."""


class IntNode:
    """A test node with one INT input `value` and one INT output, computed by `run`."""
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {})}}
