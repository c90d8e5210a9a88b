"""The fused CPU layers (csrc/cpu/fused_ops_cpu.cpp) against the torch composition they replace,
and the binding that routes a model's layers to them (bf16/fp16 CPU tensors only)."""
import pytest
import torch
import torch.nn.functional as F

from continuum.layers import cpu_kernels
from continuum.layers.activation import SiluAndMul
from continuum.layers.layernorm import RMSNorm
from continuum.layers.rotary import RotaryEmbedding

mod = cpu_kernels.load()
pytestmark = pytest.mark.skipif(mod is None, reason=f"CPU kernel did not build: {cpu_kernels.failure()}")
ops = torch.ops.continuum_cpu_ops


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("T,D", [(1, 768), (64, 576), (300, 2048)])
def test_rms_norm_matches_the_composition(dtype, T, D):
    g = torch.Generator().manual_seed(T)
    x = (torch.randn(T, D, generator=g) * 3).to(dtype)
    res = torch.randn(T, D, generator=g).to(dtype)
    norm = RMSNorm(D, 1e-5).to(dtype)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(D, generator=g) * 0.2 + 1)
    ref, ref_sum = norm(x, res)
    ref_plain = norm(x)
    out, out_sum = ops.rms_norm(x, res, norm.weight, 1e-5)
    (plain,) = ops.rms_norm(x, None, norm.weight, 1e-5)
    assert torch.equal(out_sum, ref_sum)
    # A float sum in another order may move x * rsqrt(mean) across a rounding boundary
    # (more often with fp16's 10-bit mantissa than bf16's 7).
    rare = 1e-3 if dtype == torch.bfloat16 else 5e-3
    assert (out != ref).float().mean() < rare and (plain != ref_plain).float().mean() < rare
    torch.testing.assert_close(out.float(), ref.float(), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_silu_and_mul_within_one_ulp(dtype):
    x = (torch.randn(97, 2 * 1000, generator=torch.Generator().manual_seed(1)) * 4).to(dtype)
    ref = SiluAndMul()(x)
    out = ops.silu_and_mul(x)
    # Only the exp differs (libm vs torch's vectorised one): a few outputs one ulp apart.
    assert (out != ref).float().mean() < 0.01
    torch.testing.assert_close(out.float(), ref.float(), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("hd", [64, 128, 48])     # AVX-512 bf16 path (half % 16 == 0) and the scalar one
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_rotary_matches_the_composition_exactly_on_a_qkv_slice(dtype, hd):
    heads, kv = 12, 4
    rope = RotaryEmbedding(hd, 4096, 10000.0).to(dtype)
    qkv = torch.randn(37, (heads + 2 * kv) * hd, generator=torch.Generator().manual_seed(2)).to(dtype)
    qkv[0, :8] = torch.tensor([1e30, -1e30, 3e-39, 0.0, -0.0, 1e-20, 2.5, -7.75]).to(dtype)  # large, tiny, signed 0
    q, k, _ = qkv.split([heads * hd, kv * hd, kv * hd], dim=-1)     # strided rows, as in the model
    cs = rope.get_cos_sin(torch.randint(0, 4096, (37,), generator=torch.Generator().manual_seed(3)))
    for x in (q, k):
        assert torch.equal(ops.rotary(x, cs, hd), rope.rotate(x, cs))


def test_only_a_bound_cpu_kernel_backend_routes_layers_to_the_fused_ops():
    from continuum.layers.attention_backend import AttentionBackend, CpuKernelBackend
    model = torch.nn.ModuleDict({"norm": RMSNorm(8), "act": SiluAndMul(), "rope": RotaryEmbedding(4, 16, 10000.0)})
    layers = list(model.values())
    assert all(m.fused is None for m in layers)               # unbound: the torch composition
    CpuKernelBackend(mod).bind(model)
    assert all(m.fused is ops for m in layers)
    x = torch.randn(3, 8, dtype=torch.bfloat16)
    assert cpu_kernels.use_fused(model["norm"].fused, x)
    assert not cpu_kernels.use_fused(model["norm"].fused, x.float())   # fp32 keeps torch's
    AttentionBackend().bind(model)                              # a torch-reference engine
    assert all(m.fused is None for m in layers)


def test_bad_shapes_are_clear_errors():
    with pytest.raises(RuntimeError, match="even"):
        ops.silu_and_mul(torch.zeros(2, 3, dtype=torch.bfloat16))
    with pytest.raises(RuntimeError, match="weight"):
        ops.rms_norm(torch.zeros(2, 4, dtype=torch.bfloat16), None, torch.ones(3, dtype=torch.bfloat16), 1e-5)
    with pytest.raises(RuntimeError, match="cs"):
        ops.rotary(torch.zeros(2, 8, dtype=torch.bfloat16), torch.zeros(3, 4, dtype=torch.bfloat16), 4)


def test_fused_ops_ignore_silu_reference_dtype_float32():
    # fp32 inputs still work when called directly (dispatch covers them), same values to 1e-6.
    x = torch.randn(5, 8)
    torch.testing.assert_close(ops.silu_and_mul(x), F.silu(x[:, :4]) * x[:, 4:], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_reshape_and_cache_matches_the_reference_with_strided_rows_and_skips(dtype):
    from continuum.ops import reference
    g = torch.Generator().manual_seed(4)
    hkv, d, bs, nb = 3, 64, 16, 6
    kv = torch.randn(7, 2 * hkv * d + 5, generator=g).to(dtype)       # a fused-qkv-like row
    k = kv[:, :hkv * d].view(7, hkv, d)
    v = kv[:, hkv * d:2 * hkv * d].view(7, hkv, d)
    slots = torch.tensor([0, 17, -1, 95, 40, -1, 3])
    caches = [torch.zeros(nb, bs, hkv, d, dtype=dtype) for _ in range(4)]
    ops.reshape_and_cache(k, v, caches[0], caches[1], slots)
    reference.reshape_and_cache(k, v, caches[2], caches[3], slots)
    assert torch.equal(caches[0], caches[2]) and torch.equal(caches[1], caches[3])
    with pytest.raises(RuntimeError, match="outside the cache"):
        ops.reshape_and_cache(k, v, caches[0], caches[1], torch.tensor([0, 1, 2, 3, 4, 5, nb * bs]))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("V", [1, 5, 16, 17, 1000, 49155])
def test_argmax_rows_is_torch_argmax_ties_nan_and_inf_included(dtype, V):
    g = torch.Generator().manual_seed(V)
    x = torch.randn(8, V, generator=g).to(dtype)
    x[1] = x[1].round()                          # ties: the first index wins
    x[2] = float("-inf")                          # all -inf: index 0
    if V > 3:
        x[3, 3] = float("nan")                    # NaN outranks everything
    if V > 20:
        x[4, V - 2] = float("nan")
        x[4, 10] = float("inf")
        x[5, 17] = x[5, V - 1] = float("inf")     # tied infinities
        x[6, V - 1] = 1e4                         # the maximum in the tail past the last 16
    got = ops.argmax_rows(x)
    assert got.dtype == torch.long and torch.equal(got, x.argmax(-1))
    assert torch.equal(cpu_kernels.argmax_rows(x), x.argmax(-1))
    assert torch.equal(ops.argmax_rows(x[:, :V // 2 + 1]), x[:, :V // 2 + 1].argmax(-1))  # strided rows


def test_argmax_rows_rejects_empty_rows():
    with pytest.raises(RuntimeError, match="empty rows"):
        ops.argmax_rows(torch.empty(2, 0))
