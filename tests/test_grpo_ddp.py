"""Scale-out: two gloo ranks give the same update as one process on the same data."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from grpo_fixtures import make_trainer


def _worker(rank, world_size, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        trainer = make_trainer(iterations=2, beta=0.5, monitor_samples=2)
        trainer.train()
        torch.save({"params": [p.detach().clone() for p in trainer.params], "history": trainer.history},
                   os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()  # neither rank tears the file store down while the other still uses it
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available in this build")
def test_two_gloo_ranks_match_one_process(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    single = make_trainer(iterations=2, beta=0.5, monitor_samples=2)
    single.train()
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for r in ranks:  # every rank holds the same LoRA, equal to the single-process one up to float rounding
        for a, b in zip(r["params"], single.params):
            torch.testing.assert_close(a, b.detach(), rtol=1e-4, atol=1e-6)
        assert [h["reward_mean"] for h in r["history"]] == pytest.approx(
            [h["reward_mean"] for h in single.history], rel=1e-5)
        # the logged KL is the mean over both ranks' samples, i.e. the single process's over all of them
        assert [h["kl"] for h in r["history"]] == pytest.approx([h["kl"] for h in single.history], rel=1e-4)
        assert [h["first_kl"] for h in r["history"]] == pytest.approx([h["first_kl"] for h in single.history],
                                                                      rel=1e-4)
    assert all(h["kl"] > 0 for h in single.history)
    # the held-out monitor runs on rank 0 alone, and scores what the single process scores
    assert [h["held_out_reward"] for h in ranks[0]["history"]] == pytest.approx(
        [h["held_out_reward"] for h in single.history], rel=1e-5)
    assert all("held_out_reward" not in h for h in ranks[1]["history"])
    untrained = make_trainer().params
    assert any(not torch.equal(a, b.detach()) for a, b in zip(ranks[0]["params"], untrained))  # it did train
