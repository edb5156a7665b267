"""Training through blocks that update their input in place (Flux-style ``img += …``)."""
import contextlib

import pytest
import torch
import torch.utils.checkpoint

from training.saved_tensors import private_saved_activations


class InPlaceBlock(torch.nn.Module):
    """Like Flux's blocks: the residual stream is updated in place after a norm saved it for the backward."""

    def __init__(self, dim, inplace=True):
        super().__init__()
        self.norm = torch.nn.LayerNorm(dim, elementwise_affine=False)
        self.attn = torch.nn.Linear(dim, dim)
        self.mlp = torch.nn.Linear(dim, dim)
        self.inplace = inplace

    def forward(self, x):
        if self.inplace:
            x += self.attn(self.norm(x))
            x *= 0.9
            x[:, :2] += 0.1 * self.mlp(self.norm(x))[:, :2]
            return x
        x = x + self.attn(self.norm(x))
        x = x * 0.9
        return torch.cat([x[:, :2] + 0.1 * self.mlp(self.norm(x))[:, :2], x[:, 2:]], dim=1)


def loss_and_grads(inplace, private=False, checkpoint=False):
    torch.manual_seed(0)
    stem = torch.nn.Linear(6, 6).double()
    blocks = torch.nn.ModuleList([InPlaceBlock(6, inplace).double() for _ in range(3)])
    x = torch.linspace(-1, 1, 24, dtype=torch.float64).reshape(4, 6)
    with private_saved_activations() if private else contextlib.nullcontext():
        h = stem(x)
        for block in blocks:
            h = torch.utils.checkpoint.checkpoint(block, h, use_reentrant=False) if checkpoint else block(h)
        loss = (h ** 2).sum()
        loss.backward()
    params = [stem.weight] + [b.attn.weight for b in blocks] + [b.mlp.weight for b in blocks]
    return loss.item(), [p.grad.clone() for p in params]


def test_in_place_blocks_cannot_train_as_they_are():
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss_and_grads(inplace=True)


def test_checkpointing_alone_does_not_help():
    _, reference = loss_and_grads(inplace=False)
    try:
        _, checkpointed = loss_and_grads(inplace=True, checkpoint=True)
    except RuntimeError as error:
        assert "modified by an inplace operation" in str(error)
    else:  # the recomputation starts from the already-updated input: a silently wrong gradient
        assert not all(torch.allclose(a, b) for a, b in zip(reference, checkpointed))


def test_private_saved_activations_give_the_exact_loss_and_gradient():
    loss_ref, reference = loss_and_grads(inplace=False)
    loss, grads = loss_and_grads(inplace=True, private=True)
    assert loss == loss_ref
    for a, b in zip(reference, grads):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)


def test_a_tensor_saved_by_several_ops_is_copied_once_and_leaves_never():
    weight = torch.randn(5, 5, requires_grad=True)
    x = torch.randn(3, 5) @ weight  # an activation
    with private_saved_activations():
        a, b = x.sin(), x.cos()  # both save x: one private copy
        c = weight * 2.0 + weight.sin()  # sin saves its leaf input as it is
    copy_a, copy_b = a.grad_fn._saved_self, b.grad_fn._saved_self
    assert copy_a.data_ptr() == copy_b.data_ptr() != x.data_ptr() and torch.equal(copy_a, x)
    assert c.grad_fn.next_functions[1][0]._saved_self.data_ptr() == weight.data_ptr()


class TwoStream(torch.nn.Module):
    """Flux-like double block: two in-place residual streams, keyword arguments, a tuple out."""

    def __init__(self, dim):
        super().__init__()
        self.a, self.b = InPlaceBlock(dim), InPlaceBlock(dim)
        self.mix = torch.nn.Linear(dim, dim)

    def forward(self, img, txt, vec=None, options=None):
        img += self.mix(txt) * options["scale"] + vec
        txt += 0.5 * self.a(img.clone())
        return self.b(img), txt


def two_stream_grads(checkpoint):
    from training.checkpointing import checkpoint_blocks
    torch.manual_seed(1)
    blocks = torch.nn.ModuleList([TwoStream(6).double() for _ in range(2)])
    stem = torch.nn.Linear(6, 6).double()
    for p in list(blocks.parameters()) + list(stem.parameters()):
        p.requires_grad_(False)
    lora = [torch.nn.Parameter(torch.full((6, 6), 0.01, dtype=torch.float64)) for _ in range(2)]
    undo = checkpoint_blocks(blocks) if checkpoint else (lambda: None)
    x = torch.linspace(-1, 1, 24, dtype=torch.float64).reshape(4, 6)
    with private_saved_activations():
        img, txt = stem(x), x.flip(0)  # neither requires grad: only the "LoRA" inside the blocks does
        for block, delta in zip(blocks, lora):
            block.mix.weight = torch.nn.Parameter(block.mix.weight.detach(), requires_grad=False)
            vec = x @ delta
            img, txt = block(img, txt, vec=vec, options={"scale": 0.3})
        loss = (img ** 2).sum() + (txt ** 3).sum()
        loss.backward()
    undo()
    return loss.item(), [p.grad.clone() for p in lora]


def test_checkpointed_blocks_give_the_exact_gradient_with_in_place_updates_and_keyword_inputs():
    loss_ref, reference = two_stream_grads(checkpoint=False)
    loss, grads = two_stream_grads(checkpoint=True)
    assert loss == loss_ref
    for a, b in zip(reference, grads):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14) and a.abs().sum() > 0


def test_checkpointing_is_undone_and_skipped_without_grad():
    from training.checkpointing import checkpoint_blocks, model_blocks
    net = torch.nn.Module()
    net.blocks = torch.nn.ModuleList([InPlaceBlock(6, inplace=False) for _ in range(3)])
    net.head = torch.nn.Linear(6, 6)
    assert model_blocks(net) == list(net.blocks)
    undo = checkpoint_blocks(model_blocks(net))
    assert all("forward" in b.__dict__ for b in net.blocks)
    with torch.no_grad():
        out = net.blocks[0](torch.ones(2, 6))
    assert out.grad_fn is None
    undo()
    assert not any("forward" in b.__dict__ for b in net.blocks)


def test_checkpointed_blocks_accept_inputs_made_under_inference_mode():
    from training.checkpointing import checkpointed
    layer = torch.nn.Linear(4, 4)
    with torch.inference_mode():
        frozen_input = torch.ones(2, 4)  # as conditioning made by another ComfyUI node is
    out = checkpointed(layer.forward)(frozen_input)
    out.sum().backward()
    assert layer.weight.grad is not None and float(layer.weight.grad.abs().sum()) > 0


def test_checkpointed_blocks_may_return_none_in_their_tuple():
    from training.checkpointing import checkpointed
    layer = torch.nn.Linear(4, 4)
    context, x = checkpointed(lambda h: (None, layer(h)))(torch.ones(2, 4))
    assert context is None
    x.sum().backward()
    assert float(layer.weight.grad.abs().sum()) > 0
