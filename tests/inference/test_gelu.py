"""tunehub's tanh GELU (``x * sigmoid(2u)``): torch's function, and installed in the transformers tunehub loads."""

from __future__ import annotations

import torch

from tunehub.inference.transformer import sigmoid_form_gelu, sigmoid_tanh_gelu, use_sigmoid_tanh_gelu


def test_sigmoid_form_is_torchs_tanh_gelu() -> None:
    x = torch.cat([torch.linspace(-30, 30, 20001), torch.randn(100000) * 3, torch.tensor([0.0, -0.0, 1e-6, -1e-6])])
    exact = torch.nn.functional.gelu(x.double(), approximate="tanh")
    ours = sigmoid_form_gelu(x).double()
    assert float((ours - exact).abs().max()) < 2e-6
    assert torch.isfinite(ours).all()
    for dtype in (torch.bfloat16, torch.float16):  # the output dtype follows the input; one rounding apart
        half = x.clamp(-60000, 60000).to(dtype)
        theirs = torch.nn.functional.gelu(half, approximate="tanh")
        mine = sigmoid_form_gelu(half)
        assert mine.dtype == dtype
        ulp = torch.finfo(dtype).eps * theirs.float().abs().clamp(min=1e-3)
        assert bool(((mine.float() - theirs.float()).abs() <= ulp).all())


def test_eager_calls_run_torchs_kernel_and_traced_ones_the_sigmoid_form() -> None:
    x = torch.randn(4096) * 4
    assert torch.equal(sigmoid_tanh_gelu(x), torch.nn.functional.gelu(x, approximate="tanh"))
    graphs: list[str] = []

    def backend(graph: torch.fx.GraphModule, inputs: list[torch.Tensor]) -> object:
        graphs.append(str(graph.code))
        return graph.forward

    traced = torch.compile(sigmoid_tanh_gelu, backend=backend, fullgraph=True)(x)
    assert "sigmoid" in graphs[0] and "gelu" not in graphs[0]
    assert float((traced - torch.nn.functional.gelu(x, approximate="tanh")).abs().max()) < 1e-5


def test_the_tiny_wan_transformer_gets_it_and_gives_the_same_output() -> None:
    """Traced by dynamo (a backend that records each graph and runs it as is: no compiler), each
    block's feed-forward runs the sigmoid form instead of torch's GELU; eager calls do not change."""
    from tunehub.demo.tiny import build_transformer

    model = build_transformer("t2v_1.3B", 0).float().eval()
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(1, model.config.in_channels, 2, 8, 8, generator=generator)
    text = torch.randn(1, 8, model.config.text_dim, generator=generator)
    timestep = torch.tensor([500])

    def traced_calls(name: str) -> tuple[torch.Tensor, int]:
        """(the traced model's output, how often ``name`` appears in its graphs)"""
        graphs: list[str] = []

        def backend(graph: torch.fx.GraphModule, inputs: list[torch.Tensor]) -> object:
            graphs.append(str(graph.code))
            return graph.forward

        torch._dynamo.reset()
        out = torch.compile(model, backend=backend)(hidden, timestep, text, return_dict=False)[0]
        return out, sum(code.count(name) for code in graphs)

    with torch.inference_mode():
        stock = model(hidden, timestep, text, return_dict=False)[0]
        _, stock_gelus = traced_calls("gelu")
        assert use_sigmoid_tanh_gelu(model) == len(model.blocks)  # one feed-forward GELU a block
        assert all(block.ffn.net[0].gelu is sigmoid_tanh_gelu for block in model.blocks)
        assert torch.equal(model(hidden, timestep, text, return_dict=False)[0], stock)  # eager: torch's GELU
        traced, gelus = traced_calls("gelu")
        _, sigmoids = traced_calls("sigmoid")
    assert stock_gelus - gelus == len(model.blocks) and sigmoids >= len(model.blocks)
    assert float((traced - stock).norm() / stock.norm()) < 1e-5
