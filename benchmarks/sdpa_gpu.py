"""Forward + backward time of PyTorch's SDPA kernels at a training shape: which one should go first on this GPU.

    python benchmarks/sdpa_gpu.py [--seq-len 16384] [--heads 12] [--kv-heads 2] [--head-dim 128] [--repeats 10]

Times causal bf16 attention (batch 1) with each of flash, cuDNN and memory-efficient forced, with grouped KV heads
passed as they are (`enable_gqa`) and expanded to the query heads (as transformers does when it does not use
`enable_gqa`), and prints TFLOP/s by the usual count (4·s²·h·d / 2 forward for causal, 2.5× that for forward +
backward), the largest difference of output and gradients from flash's, and PyTorch's own priority order here.
The default shape is a 1.5B Qwen2's attention at 16k tokens, the train_gpu.py benchmark's.

Measured on one H100 (torch 2.11, cuDNN 9.19, median of 5): cuDNN 5.10 ms (404 TFLOP/s), flash 9.58 ms (215),
memory-efficient not usable with grouped KV heads and 21.6 ms (95) with them expanded; PyTorch's own order there
already starts with cuDNN.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
}


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gqa: bool) -> torch.Tensor:
    if gqa:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    rep = q.shape[1] // k.shape[1]
    return F.scaled_dot_product_attention(
        q, k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1), is_causal=True
    )


def time_backend(name: str, inputs: tuple[torch.Tensor, ...], grad: torch.Tensor, gqa: bool, repeats: int):
    q, k, v = (t.detach().clone().requires_grad_() for t in inputs)
    with sdpa_kernel(BACKENDS[name]):
        try:
            for _ in range(2):  # warm-up (and plan building for cuDNN)
                out = attention(q, k, v, gqa)
                out.backward(grad)
        except RuntimeError as e:
            return None, f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
        times = []
        for _ in range(repeats):
            q.grad = k.grad = v.grad = None
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = attention(q, k, v, gqa)
            out.backward(grad)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
    return (statistics.median(times), out.detach(), q.grad, k.grad, v.grad), None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seq-len", type=int, default=16384)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--repeats", type=int, default=10)
    opts = p.parse_args()
    torch.manual_seed(0)
    s, h, kv, d = opts.seq_len, opts.heads, opts.kv_heads, opts.head_dim
    q = torch.randn(1, h, s, d, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, kv, s, d, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(1, kv, s, d, device="cuda", dtype=torch.bfloat16)
    grad = torch.randn(1, h, s, d, device="cuda", dtype=torch.bfloat16)
    flops = 2.5 * 4 * s * s * h * d / 2  # causal; backward = 1.5x forward
    F.scaled_dot_product_attention(q, q, q, is_causal=True)  # lets PyTorch settle its default order
    order = [SDPBackend(i).name for i in torch._C._get_sdp_priority_order()]
    results = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version(),
        "pytorch_priority_order": order,
        "runs": [],
    }
    print(f"{results['device']}, torch {torch.__version__}, cuDNN {results['cudnn']}; PyTorch's order here: {order}")
    print(f"shape: seq {s}, heads {h}, kv heads {kv}, head dim {d}, causal bf16, forward + backward")
    for gqa in (True, False):
        reference = None
        for name in BACKENDS:
            measured, error = time_backend(name, (q, k, v), grad, gqa, opts.repeats)
            row = {"backend": name, "enable_gqa": gqa}
            if measured is None:
                row["error"] = error
                print(f"  {'gqa' if gqa else 'expanded':8s} {name:9s} not usable: {error}")
            else:
                seconds, *tensors = measured
                reference = reference or tensors
                diff = max((a.float() - b.float()).abs().max().item() for a, b in zip(tensors, reference))
                row |= {"seconds": seconds, "tflops": flops / seconds / 1e12, "max_abs_diff_vs_first": diff}
                print(
                    f"  {'gqa' if gqa else 'expanded':8s} {name:9s} {seconds * 1e3:8.2f} ms  "
                    f"{row['tflops']:6.1f} TFLOP/s  max |diff| vs first usable {diff:.3g}"
                )
            results["runs"].append(row)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
