"""Which model platforms this server may load (``--allowed-platforms``): the trust boundary.

A model artifact of some platforms is code, not data. Loading it runs what its author wrote:

- ``torchscript``: a serialised TorchScript program (``torch.jit.load`` runs its code);
- ``torch_export``: a ``torch.export`` program (``.pt2``), a graph of operators with pickled
  constants;
- ``torch_aoti``: an AOTInductor package, a compiled shared library ``dlopen``-ed into the
  server process;
- ``python``: the user's ``model.py``, imported and run as it is.

``workload`` (safetensors weights into inferpack's own model code) and ``onnx`` (an ONNX graph
run by ONNX Runtime, which loads no custom-operator library unless the server asks) are
data. An operator serving artifacts from people they do not trust lists only the platforms
whose artifacts are data; a refused model turns UNAVAILABLE with the reason, before any of
its artifacts is opened.
"""

from __future__ import annotations

from typing import Final

from inferpack.config.model_config import PLATFORMS
from inferpack.errors import ConfigError

# platform -> what loading its artifact executes
CODE_PLATFORMS: Final[dict[str, str]] = {
    "torchscript": "a TorchScript program",
    "torch_export": "a torch.export program with pickled constants",
    "torch_aoti": "a compiled shared library loaded into the server",
    "python": "Python code imported into the server (or its worker processes)",
}


def parse_allowed_platforms(text: str) -> frozenset[str]:
    """``"workload,onnx"`` -> the set, every unknown name reported at once."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in PLATFORMS]
    if unknown or not names:
        known = ", ".join(sorted(PLATFORMS))
        what = f"unknown platform(s) {', '.join(map(repr, unknown))}" if unknown else "no platform"
        raise ConfigError([f"--allowed-platforms: {what}; known: {known}"])
    return frozenset(names)


def refuse_unless_allowed(model: str, platform: str, allowed: frozenset[str] | None) -> None:
    """Raise ConfigError naming the model, its platform and the allowed list, if refused."""
    if allowed is None or platform in allowed:
        return
    runs = CODE_PLATFORMS.get(platform)
    why = f": its artifact is code ({runs})" if runs else ""
    raise ConfigError(
        [
            f"model '{model}': platform '{platform}' is not allowed on this server "
            f"(--allowed-platforms {','.join(sorted(allowed))}){why}"
        ]
    )
