"""Silero VAD v6's weights, from the ONNX file faster-whisper ships, to the engine's safetensors file.

    pip install ".[vad-weights]"
    python scripts/vad_weights.py [ONNX] [--output src/max_whisper/assets/silero_vad_v6.safetensors]

ONNX: faster-whisper's `faster_whisper/assets/silero_vad_v6.onnx` by default (Silero VAD v6.0, MIT, (c) Silero
Team; the same probabilities as silero-vad 6.0.0's model). Names as silero's PyTorch checkpoint names them;
the LSTM's gates in PyTorch's order (input, forget, cell, output; ONNX orders them input, output, forget, cell)
and its two biases summed (the model only ever adds them).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "src" / "max_whisper" / "assets" / "silero_vad_v6.safetensors"
LSTM = {"onnx::LSTM_209": "decoder.rnn.weight_ih", "onnx::LSTM_210": "decoder.rnn.weight_hh",
        "onnx::LSTM_211": "decoder.rnn.bias"}


def onnx_to_torch_gates(w: np.ndarray) -> np.ndarray:
    """ONNX's i, o, f, c gate blocks (rows) in PyTorch's i, f, c, o order."""
    i, o, f, c = np.split(w, 4, axis=0)
    return np.concatenate([i, f, c, o], axis=0)


def main() -> None:
    import onnx
    from onnx import numpy_helper
    from safetensors.numpy import save_file

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("onnx", type=Path, nargs="?")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = p.parse_args()
    if args.onnx is None:
        import faster_whisper

        args.onnx = Path(faster_whisper.__file__).parent / "assets" / "silero_vad_v6.onnx"
    graph = onnx.load(str(args.onnx)).graph
    found = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    out = {name: found[name] for name in found if name.startswith(("encoder.", "decoder.conv1d"))}
    for name, dst in LSTM.items():
        value = found[name][0]
        if dst.endswith("bias"):
            value = value[:512] + value[512:]
        out[dst] = onnx_to_torch_gates(value)
    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in sorted(out.items())}, str(args.output),
              metadata={"source": f"{args.onnx.name} (faster-whisper 1.2.1), Silero VAD v6.0, MIT"})
    print(f"{args.output}: {', '.join(f'{k} {tuple(v.shape)}' for k, v in sorted(out.items()))}")


if __name__ == "__main__":
    main()
