"""Converts facenet-pytorch's MTCNN weights (pnet.pt, rnet.pt, onet.pt) into `weights/mtcnn.npz`, once.

    pip download --no-deps facenet-pytorch==2.6.0 && unzip facenet_pytorch-2.6.0-py3-none-any.whl
    python -m jaxpose.inference.mtcnn_convert facenet_pytorch/data [--out jaxpose/inference/weights/mtcnn.npz]

Needs torch (`pip install -e ".[torch]"`); the files are read with
`torch.load(weights_only=True)`, so nothing in them is executed. The npz holds
the state_dict tensors unchanged (PyTorch layouts, float32) under
"pnet/conv1.weight" etc.; `mtcnn.load_params` does the layout changes. It is
written byte-for-byte reproducibly (fixed zip timestamps, sorted names), so
its sha256 (SOURCE_SHA256 / NPZ_SHA256, checked in the tests) identifies it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import pathlib
import sys
import zipfile

import numpy as np

from jaxpose.inference.mtcnn import NETS, WEIGHTS

# facenet-pytorch 2.6.0 (PyPI wheel, MIT licence), facenet_pytorch/data/*.pt.
SOURCE_SHA256 = {
    "pnet.pt": "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
    "rnet.pt": "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
    "onet.pt": "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
}
NPZ_SHA256 = "62255eec6584803b7c248134e0325392d029eb5a6fc625d99950dfd748011537"


def sha256(path: str | pathlib.Path) -> str:
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def read_facenet_weights(data_dir: str | pathlib.Path) -> dict[str, np.ndarray]:
    """{"pnet/conv1.weight": float32 array, ...} from facenet-pytorch's data folder (sha256 checked)."""
    import torch

    tensors = {}
    for net in NETS:
        path = pathlib.Path(data_dir) / f"{net}.pt"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file (facenet-pytorch's facenet_pytorch/data folder?)")
        if (digest := sha256(path)) != SOURCE_SHA256[path.name]:
            raise ValueError(f"{path}: sha256 {digest} is not facenet-pytorch 2.6.0's {SOURCE_SHA256[path.name]}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        tensors.update({f"{net}/{key}": value.numpy().astype(np.float32) for key, value in state.items()})
    return tensors


def write_npz(tensors: dict[str, np.ndarray], out: str | pathlib.Path) -> str:
    """np.savez's format, uncompressed, with a fixed timestamp and sorted names (reproducible bytes).

    Returns the file's sha256.
    """
    buffer = io.BytesIO()
    # Stored, not deflated: compressed bytes may differ between zlib builds.
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(tensors):
            array = io.BytesIO()
            np.lib.format.write_array(array, np.ascontiguousarray(tensors[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            archive.writestr(info, array.getvalue())
    pathlib.Path(out).write_bytes(buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", help="facenet-pytorch's facenet_pytorch/data folder (pnet.pt, rnet.pt, onet.pt)")
    parser.add_argument("--out", default=str(WEIGHTS), help=f"the npz to write (default {WEIGHTS})")
    args = parser.parse_args(argv)
    digest = write_npz(read_facenet_weights(args.data_dir), args.out)
    print(f"wrote {args.out}  sha256 {digest}")
    if digest != NPZ_SHA256:
        print(f"note: differs from the shipped file's sha256 {NPZ_SHA256}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
