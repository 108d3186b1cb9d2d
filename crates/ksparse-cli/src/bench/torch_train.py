# Baseline for `ksparse bench train`: the same TopK autoencoder step in PyTorch on CPU.
# Loss = MSE(x, x̂_k)/var + 1/8 · MSE(x, x̂_4k)/var; Adam; decoder atoms projected and
# renormalised, as ksparse does. argv: dim hidden k batch steps threads; prints one JSON line.
import json, sys, time
import torch

dim, hidden, k, batch, steps, threads = map(int, sys.argv[1:7])
torch.set_num_threads(threads)
torch.manual_seed(0)
x_all = torch.nn.functional.normalize(torch.rand(batch * 4, dim) * 2 - 1, dim=1)
var = ((x_all - x_all.mean(0)) ** 2).sum(1).mean()
w_dec = torch.nn.functional.normalize(torch.rand(hidden, dim) * 2 - 1, dim=1)
w_enc = torch.nn.Parameter(w_dec.clone())
w_dec = torch.nn.Parameter(w_dec)
b_enc = torch.nn.Parameter(torch.zeros(hidden))
b_pre = torch.nn.Parameter(torch.zeros(dim))
opt = torch.optim.Adam([w_enc, w_dec, b_enc, b_pre], lr=1e-4, eps=6.25e-10)


def decode(pre, kk):
    top = pre.topk(kk, dim=1)
    z = torch.zeros_like(pre).scatter(1, top.indices, torch.relu(top.values))
    return z @ w_dec + b_pre


def step(i):
    x = x_all[(i % 4) * batch:(i % 4 + 1) * batch]
    pre = (x - b_pre) @ w_enc.T + b_enc
    loss = ((decode(pre, k) - x) ** 2).sum(1).mean() / var + ((decode(pre, 4 * k) - x) ** 2).sum(1).mean() / var / 8
    opt.zero_grad()
    loss.backward()
    with torch.no_grad():
        w_dec.grad -= (w_dec.grad * w_dec).sum(1, keepdim=True) * w_dec
    opt.step()
    with torch.no_grad():
        w_dec.div_(w_dec.norm(dim=1, keepdim=True))


step(0)  # warm-up
start = time.perf_counter()
for i in range(steps):
    step(i + 1)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "torch": torch.__version__, "threads": torch.get_num_threads()}))
