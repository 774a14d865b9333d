"""The PyTorch peers of :mod:`.peers`: our LIF network trained by BPTT, eager, on the CPU.

Imported only when a peer is built (torch, and dcls for delays, are the optional ``peers`` extra).

The network is ours (``NetworkConfig``, one hidden layer): input -> hidden LIF (our membrane
decay ``alpha``, soft reset, threshold ``theta``, input gain 1) -> leaky readout (decay
``kappa``), per-step softmax cross-entropy, Adam.  Without delays the input current of every
step is one matrix product ``x @ W``; with delays it is a ``Dcls1d`` convolution over time, as in
the DCLS delay papers: one Gaussian-interpolated tap per synapse with a learnable position, over
``max_delay_steps`` taps rounded down to odd (25 taps, delays 0-24, for our 25).  The spike's
pseudo-derivative is ours: ``gamma * max(0, 1 - |v - theta| / theta)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

try:
    from DCLS.construct.modules import Dcls1d     # the dcls package installs as DCLS
except ImportError:                               # only the delay peer needs it (peers.py checks first)
    Dcls1d = None


class _Spike(torch.autograd.Function):
    """Heaviside step forward, piecewise-linear pseudo-derivative backward."""

    @staticmethod
    def forward(ctx, v, theta: float, gamma: float):
        ctx.save_for_backward(v)
        ctx.theta, ctx.gamma = theta, gamma
        return (v >= theta).float()

    @staticmethod
    def backward(ctx, grad):
        (v,) = ctx.saved_tensors
        surrogate = (v - ctx.theta).abs_().mul_(-1.0 / ctx.theta).add_(1.0).clamp_(min=0.0)    # in place
        return grad * surrogate.mul_(ctx.gamma), None, None


class _Net(torch.nn.Module):
    def __init__(self, network, delays: bool):
        super().__init__()
        [layer] = network.layer_specs                    # peers.Peer.matches: one hidden layer
        n_in, n_hidden, n_out = network.n_inputs, layer.n_neurons, network.n_outputs
        self.alpha = layer.decay_mem                     # our discretisation's decay
        self.kappa = network.decay_out
        self.theta, self.gamma = float(layer.threshold), float(network.surrogate_gamma)
        self.delays = delays
        std = layer.feedforward.weight_init_scale * layer.threshold / math.sqrt(n_in)
        if delays:
            taps = network.max_delay_steps
            self.kernel_steps = max(1, taps if taps % 2 else taps - 1)      # odd, as DCLS expects
            self.input = Dcls1d(n_in, n_hidden, kernel_count=1, dilated_kernel_size=self.kernel_steps,
                                bias=False, version="gauss")
            self.input.SIG.requires_grad_(False)                     # fixed kernel width
            torch.nn.init.normal_(self.input.weight, 0.0, std)
        else:
            self.input = torch.nn.Linear(n_in, n_hidden, bias=False)
            torch.nn.init.normal_(self.input.weight, 0.0, std)
        self.readout = torch.nn.Linear(n_hidden, n_out)

    def forward(self, x):
        """x (T, B, n_inputs) float32 -> readout (T, B, n_outputs)."""
        if self.delays:                                  # (B, n_in, T + K - 1) -> (B, n_hidden, T)
            current = self.input(F.pad(x.permute(1, 2, 0), (self.kernel_steps - 1, 0))).permute(2, 0, 1)
        else:
            current = self.input(x)                      # all steps in one matrix product
        v = torch.zeros_like(current[0])
        z = torch.zeros_like(current[0])
        spikes = []
        for current_t in current.unbind(0):              # unbind: one gradient copy, not one per step
            v = self.alpha * v + current_t - self.theta * z             # soft reset
            z = _Spike.apply(v, self.theta, self.gamma)
            spikes.append(z)
        drive = self.readout(torch.stack(spikes))       # (T, B, n_out), one matrix product
        steps = drive.shape[0]
        return (self._decay(steps) @ drive.reshape(steps, -1)).reshape(drive.shape)   # leaky readout

    def _decay(self, steps: int):
        """(T, T) lower-triangular kappa^(t - s): the readout's leaky integration as one product."""
        if getattr(self, "_decay_matrix", None) is None or self._decay_matrix.shape[0] != steps:
            t = torch.arange(steps, dtype=torch.float32)
            lag = t[:, None] - t[None, :]
            self._decay_matrix = torch.where(lag >= 0, self.kappa ** lag.clamp(min=0), torch.zeros(()))
        return self._decay_matrix


class TorchLIF:
    """One peer model: ``load(x, labels)``, then ``train()`` (a BPTT + Adam step) and ``infer()``.

    Parameters
    ----------
    network : NetworkConfig, our network (one hidden layer, no recurrence)
    delays : bool, learnable synaptic delays the DCLS way
    batch_size : int
    threads : int, ``torch.set_num_threads`` while this model exists (restored by :meth:`close`)
    seed : int
    """

    def __init__(self, network, delays: bool, batch_size: int, threads: int, seed: int = 0):
        self._threads_before = torch.get_num_threads()
        torch.set_num_threads(int(threads))
        torch.manual_seed(seed)
        self.net = _Net(network, delays)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=1e-3)
        self.batch_size = batch_size
        self.x = self.targets = None

    def load(self, x: np.ndarray, labels: np.ndarray) -> None:
        """x (T, B, n_inputs) spike counts, labels (B,) int."""
        self.x = torch.from_numpy(np.ascontiguousarray(x, np.float32))
        self.targets = torch.from_numpy(np.asarray(labels, np.int64)).repeat(x.shape[0])    # (T * B,)

    def train(self) -> float:
        """One BPTT training step on the loaded batch; returns the loss."""
        self.optimizer.zero_grad(set_to_none=True)
        y = self.net(self.x)
        loss = F.cross_entropy(y.reshape(-1, y.shape[-1]), self.targets)
        loss.backward()
        self.optimizer.step()
        if self.net.delays:
            self.net.input.clamp_parameters()            # delays stay inside the kernel
        return loss.item()

    def infer(self) -> None:
        """A forward pass on the loaded batch, no gradients."""
        with torch.no_grad():
            self.net(self.x)

    def close(self) -> None:
        torch.set_num_threads(self._threads_before)
