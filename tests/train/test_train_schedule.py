"""LR schedule: linear warmup then cosine to min_lr over exactly the run's optimizer steps."""

from __future__ import annotations

import math

import pytest
import torch

from neurons.train.module import WarmupCosine


def test_warmup_cosine_hand_values():
    f = WarmupCosine(warmup_steps=10, total_steps=110, start_factor=0.1, min_factor=0.01)
    assert f(0) == pytest.approx(0.1)
    assert f(5) == pytest.approx(0.1 + 0.9 * 0.5)
    assert f(10) == pytest.approx(1.0)
    mid = 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.5))
    assert f(60) == pytest.approx(mid)
    assert f(110) == pytest.approx(0.01) and f(500) == pytest.approx(0.01)  # never rises again
    const = WarmupCosine(10, 110, 0.1, 0.01, cosine=False)
    assert const(60) == 1.0 and const(3) == pytest.approx(0.1 + 0.9 * 0.3)


def test_lambda_lr_state_round_trip():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(5, 50, 0.0, 0.0))
    for _ in range(17):
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2 = torch.optim.AdamW([p], lr=1e-3)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, WarmupCosine(5, 50, 0.0, 0.0))
    sched2.load_state_dict(state)
    sched2.step()
    sched.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
