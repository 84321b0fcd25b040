"""v- vs eps-parameterisation of the mnist PatchUNet at equal budget (issue 16): train both for N steps (default
250; the default config otherwise), then the x0 error of each on 256 test images noised to t. Writes v_vs_eps.json.
Run: nice -n 10 python reports/mnist/v_vs_eps.py 250"""
import json
import sys

import torch

torch.set_num_threads(1)
from tasks import get_task
from tasks.pretrain import train, train_config
t = get_task("mnist")
res = {}
xt = t.split("test")[0][:256]
g = torch.Generator().manual_seed(5)
noise = torch.randn(xt.shape, generator=g)
for pred in ("v", "eps"):
    cfg = train_config(t, pred=pred, steps=int(sys.argv[1]) if len(sys.argv) > 1 else 250)
    net, info = train(t, cfg, progress=False)
    row = {}
    with torch.no_grad():
        for s in (2, 20, 100, 180, 199):
            ab = t.schedule.alpha_bar[s].float()
            xs = ab.sqrt() * xt + (1 - ab).sqrt() * noise
            eps = net(xs, torch.full((len(xt),), s))
            x0 = (xs - (1 - ab).sqrt() * eps) / ab.sqrt()
            row[s] = round(float(((x0 - xt) ** 2).mean()), 4)
    res[pred] = {"x0_mse_by_t": row, "train_s": round(info["train_seconds"]), "loss_ema": info["final_loss_ema"]}
    print(pred, res[pred], flush=True)
json.dump(res, open(__file__.replace(".py", ".json"), "w"), indent=1)
