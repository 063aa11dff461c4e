r"""2-D Kolmogorov flow: jax-cfd's explicit finite-volume scheme, batched in PyTorch.

The paper's data (SDA, Rozet & Louppe 2023) were made with jax-cfd's
``semi_implicit_navier_stokes``: incompressible Navier-Stokes on $[0, 2\pi]^2$,

$$ \partial_t \mathbf{u} = -\nabla\cdot(\mathbf{u}\otimes\mathbf{u}) + \nu \Delta \mathbf{u}
   - \alpha \mathbf{u} + (\sin(4y), 0) - \nabla p, \qquad \nabla\cdot\mathbf{u} = 0, $$

discretised on a staggered (MAC) grid and stepped with forward Euler followed by an
exact FFT pressure projection. This module reproduces that scheme operation for
operation (the same stencils, the same order of float32 arithmetic), so that
diffbench's data have the reference distribution; `benchmarks/fidelity.py` measures
the agreement with jax-cfd itself.

Layout: a velocity is a tensor ``(..., 2, N, N)`` holding ``[u, v]``; axis -2 is x and
axis -1 is y. ``u[i, j]`` lives on the x-face ``((i + 1) h, (j + 1/2) h)`` and
``v[i, j]`` on the y-face ``((i + 1/2) h, (j + 1) h)`` (jax-cfd's offsets), h = 2π/N.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

DOMAIN = 2 * math.pi


@dataclass(frozen=True)
class Physics:
    """Physical and numerical parameters of one inner step (defaults: the paper's)."""

    viscosity: float = 1e-3
    drag: float = 0.1
    forcing_amplitude: float = 1.0
    forcing_wavenumber: float = 4.0
    density: float = 1.0
    dt: float = 0.2 / 82


def _shift(c: Tensor, offset: int, dim: int) -> Tensor:
    """Value at index ``i + offset`` along ``dim`` (periodic), jax-cfd's ``shift``."""
    return torch.roll(c, -offset, dims=dim)


def _dim(axis: int) -> int:
    """Tensor dimension of grid axis 0 (x) or 1 (y)."""
    return axis - 2


def _van_leer(r: Tensor) -> Tensor:
    """Van Leer flux limiter φ(r) = 2r / (1 + r) for r > 0, else 0."""
    one_plus = 1 + r
    return torch.where(r > 0, 2 * r / torch.where(one_plus != 0, one_plus, 1), 0.0)


def _face_value(c: Tensor, w: Tensor, axis: int, courant: float) -> Tensor:
    """Interpolate ``c`` half a cell forward along ``axis`` to where ``w`` lives.

    Lax-Wendroff blended with first-order upwind by the van Leer limiter (a TVD
    scheme), exactly as jax-cfd's ``apply_tvd_limiter(lax_wendroff, van_leer_limiter)``.
    ``courant`` is dt / h.
    """
    dim = _dim(axis)
    c_left, c_right, c_next = _shift(c, -1, dim), _shift(c, 1, dim), _shift(c, 2, dim)
    positive = w > 0
    low = torch.where(positive, c, c_right)
    nu = courant * w
    jump = c_right - c
    high = torch.where(positive, c + 0.5 * (1 - nu) * jump, c_right - 0.5 * (1 + nu) * jump)
    denominator = torch.where(jump != 0, jump, 1)
    r_positive = (c - c_left) / denominator
    r_negative = (c_next - c_right) / denominator
    phi = torch.where(positive, _van_leer(r_positive), _van_leer(r_negative))
    return low - (low - high) * phi


def _backward_difference(c: Tensor, axis: int, h: float) -> Tensor:
    dim = _dim(axis)
    return (c - _shift(c, -1, dim)) / h


def _forward_difference(c: Tensor, axis: int, h: float) -> Tensor:
    dim = _dim(axis)
    return (_shift(c, 1, dim) - c) / h


def _advection(velocity: Tensor, h: float, dt: float) -> Tensor:
    r"""$-\nabla\cdot(c\,\mathbf{u})$ for each component $c$ of the velocity, in flux form.

    Component ``d`` (0: u, 1: v) is the centre of a control volume shifted half a
    cell along axis ``d``; the advecting velocity is linearly interpolated to that
    volume's faces and ``c`` is carried there by the limited Lax-Wendroff scheme.
    """
    courant = dt / h
    terms = []
    for d in range(2):
        c = velocity[..., d, :, :]
        flux_divergence = 0
        for axis in range(2):
            w = velocity[..., axis, :, :]
            w = 0.5 * w + 0.5 * _shift(w, 1, _dim(d))
            flux = _face_value(c, w, axis, courant) * w
            flux_divergence = flux_divergence + _backward_difference(flux, axis, h)
        terms.append(-flux_divergence)
    return torch.stack(terms, dim=-3)


def _laplacian(c: Tensor, h: float) -> Tensor:
    """Explicit 5-point Laplacian, with jax-cfd's float32 stencil weights."""
    scale = float(np.square(np.float32(1) / np.float32(h)))
    result = -2 * c * float(np.float32(scale) * 2)
    for axis in range(2):
        dim = _dim(axis)
        result = result + (_shift(c, -1, dim) + _shift(c, 1, dim)) * scale
    return result


def _forcing(size: int, physics: Physics, dtype: torch.dtype) -> Tensor:
    """Kolmogorov forcing (A sin(k y), 0) sampled at the u-faces, y = (j + 1/2) h."""
    h = DOMAIN / size
    y = (torch.arange(size, dtype=dtype) + 0.5) * h
    profile = physics.forcing_amplitude * torch.sin(physics.forcing_wavenumber * y)
    force = torch.zeros(2, size, size, dtype=dtype)
    force[0] = profile.expand(size, size)
    return force


def _inverse_laplacian(size: int, dtype: torch.dtype) -> Tensor:
    """Pseudo-inverse of the periodic 5-point Laplacian in rfft space, ``(N, N//2 + 1)``.

    The eigenvalues are built in float64 and inverted before the cast, as jax-cfd
    does; building them in float32 makes the lowest modes wrong by ~2e-4. The
    operator is symmetric, so they are real (jax-cfd keeps round-off imaginary parts
    below float32 precision; dropping them keeps the multiply real, which
    `torch.compile` can fuse).
    """
    h = DOMAIN / size
    column = np.zeros(size)
    column[0], column[1], column[-1] = -2 / h**2, 1 / h**2, 1 / h**2
    eigenvalues = np.add.outer(np.fft.fft(column).real, np.fft.rfft(column).real)
    cutoff = 10 * np.finfo(np.float32).eps
    with np.errstate(divide="ignore"):
        inverse = np.where(abs(eigenvalues) > cutoff, 1 / eigenvalues, 0)
    return torch.from_numpy(inverse).to(dtype)


class Operators(NamedTuple):
    """Fixed arrays of one grid: the forcing field and the inverse Laplacian."""

    forcing: Tensor
    inverse_laplacian: Tensor


@lru_cache(maxsize=16)
def operators(size: int, physics: Physics, device: torch.device,
              dtype: torch.dtype) -> Operators:
    """Build (once per grid, device and dtype) the arrays a step needs."""
    return Operators(_forcing(size, physics, dtype).to(device),
                     _inverse_laplacian(size, dtype).to(device))


def _operators_for(velocity: Tensor, physics: Physics = Physics()) -> Operators:
    return operators(velocity.shape[-1], physics, velocity.device, velocity.dtype)


def project(velocity: Tensor, inverse_laplacian: Tensor | None = None) -> Tensor:
    """Remove the divergent part: solve ∆q = ∇·u exactly by FFT, return u − ∇q.

    Divergence by backward differences, gradient by forward differences, so the
    result is discretely divergence-free on the MAC grid.
    """
    size = velocity.shape[-1]
    h = DOMAIN / size
    if inverse_laplacian is None:
        inverse_laplacian = _operators_for(velocity).inverse_laplacian
    divergence = divergence_of(velocity)
    # 1-D transforms on contiguous arrays rather than rfftn: the same maths, but on
    # the CPU a batched rfftn rounds differently from a single one, and these do not.
    spectrum = torch.fft.fft(torch.fft.rfft(divergence, dim=-1), dim=-2)
    spectrum = torch.view_as_real(spectrum) * inverse_laplacian[..., None]
    spectrum = torch.fft.ifft(torch.view_as_complex(spectrum.contiguous()), dim=-2)
    q = torch.fft.irfft(spectrum.contiguous(), n=size, dim=-1)
    gradient = torch.stack([_forward_difference(q, axis, h) for axis in range(2)], dim=-3)
    return velocity - gradient


def divergence_of(velocity: Tensor) -> Tensor:
    """Discrete divergence ∂x u + ∂y v on cell centres (backward differences)."""
    h = DOMAIN / velocity.shape[-1]
    u, v = velocity[..., 0, :, :], velocity[..., 1, :, :]
    return _backward_difference(u, 0, h) + _backward_difference(v, 1, h)


def _tendency(velocity: Tensor, forcing: Tensor, physics: Physics) -> Tensor:
    """Explicit terms: advection + diffusion + (drag + Kolmogorov forcing) / ρ."""
    h = DOMAIN / velocity.shape[-1]
    rate = _advection(velocity, h, physics.dt)
    rate = rate + physics.viscosity / physics.density * _laplacian(velocity, h)
    return rate + (-physics.drag * velocity + forcing) / physics.density


def step(velocity: Tensor, ops: Operators, physics: Physics) -> Tensor:
    """One forward-Euler step followed by the pressure projection."""
    rate = _tendency(velocity, ops.forcing, physics)
    return project(velocity + physics.dt * rate, ops.inverse_laplacian)


@lru_cache(maxsize=1)
def _compiled_step() -> Callable[[Tensor, Operators, Physics], Tensor]:
    return torch.compile(step, dynamic=False)


def advance(velocity: Tensor, steps: int, *, compile: bool = False, **physics: float) -> Tensor:
    """Advance a batch of MAC velocities ``(..., 2, N, N)`` by ``steps`` inner steps.

    ``physics`` overrides fields of `Physics` (viscosity, drag, forcing_amplitude,
    forcing_wavenumber, density, dt); N is taken from the tensor. ``compile`` fuses
    the step with `torch.compile`: several times faster for long runs, after a
    compilation of ~20 s on a CPU; results agree with eager mode to float32 rounding.
    """
    params = Physics(**physics)
    ops = _operators_for(velocity, params)
    stepper = _compiled_step() if compile else step
    for _ in range(steps):
        velocity = stepper(velocity, ops, params)
    return velocity


def _log_normal_density(k: np.ndarray, peak: float, variance: float = 0.25) -> np.ndarray:
    """Unscaled log-normal PDF with its mode at ``peak`` (jax-cfd's ``_log_normal_pdf``)."""
    mean = np.log(peak) + variance
    log_k = np.log(k)
    return np.exp(-((mean - log_k) ** 2) / 2 / variance - log_k)


def _spectral_filter(size: int, peak_wavenumber: float) -> Tensor:
    """Amplitude filter LN(|k|)/|k| on the integer wavenumbers of a 2π-periodic grid."""
    k = np.fft.fftfreq(size, 1 / size)
    magnitude = np.hypot(*np.meshgrid(k, k, indexing="ij"))
    density = np.zeros_like(magnitude)
    nonzero = magnitude > 0
    density[nonzero] = _log_normal_density(magnitude[nonzero], peak_wavenumber) / magnitude[nonzero]
    return torch.from_numpy(density)


def trajectory_seeds(seed: int, count: int) -> list[int]:
    """Distinct 63-bit seeds for ``count`` trajectories, derived from one base seed."""
    states = np.random.SeedSequence(seed).generate_state(count, np.uint64)
    seeds = [int(s) >> 1 for s in states]
    if len(set(seeds)) != count:
        raise RuntimeError(f"seed collision among {count} trajectories of base seed {seed}")
    return seeds


def _noise(seeds: Sequence[int], size: int) -> Tensor:
    """White noise (B, 2, N, N) in float32 on the CPU: one generator per trajectory."""
    fields = []
    for seed in seeds:
        generator = torch.Generator().manual_seed(seed)
        fields.append(torch.randn(2, size, size, generator=generator))
    return torch.stack(fields)


def initial_velocity(
    batch: int,
    size: int = 256,
    seed: int | Sequence[int] = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    *,
    max_velocity: float = 3.0,
    peak_wavenumber: float = 4.0,
    iterations: int = 3,
) -> Tensor:
    """Random divergence-free MAC velocities ``(batch, 2, size, size)``.

    White noise per component, filtered in Fourier space by LN(|k|)/|k| (log-normal
    peaked at ``peak_wavenumber``, log-variance 0.25), then ``iterations`` rounds of
    projection and rescaling to ``max_velocity``, as jax-cfd's
    ``filtered_velocity_field``. ``seed`` is one seed per trajectory; an int gives
    trajectory b the seed ``seed + b``. The noise is drawn on the CPU, so a seed
    means the same initial noise on every device.
    """
    seeds = [seed + b for b in range(batch)] if isinstance(seed, int) else list(seed)
    if len(seeds) != batch:
        raise ValueError(f"got {len(seeds)} seeds for a batch of {batch}")
    noise = _noise(seeds, size).to(device=device, dtype=dtype)
    return filtered_velocity(noise, max_velocity=max_velocity,
                             peak_wavenumber=peak_wavenumber, iterations=iterations)


def filtered_velocity(
    noise: Tensor, *, max_velocity: float = 3.0, peak_wavenumber: float = 4.0,
    iterations: int = 3,
) -> Tensor:
    """Turn white noise ``(..., 2, N, N)`` into a divergence-free MAC velocity."""
    size = noise.shape[-1]
    filt = _spectral_filter(size, peak_wavenumber).to(device=noise.device, dtype=noise.dtype)
    spectrum = torch.fft.fftn(noise, dim=(-2, -1))
    velocity = torch.fft.ifftn(spectrum * filt, dim=(-2, -1)).real.to(noise.dtype)
    for _ in range(iterations):
        velocity = project(velocity)
        speed = velocity.square().sum(dim=-3).sqrt().amax(dim=(-2, -1))
        velocity = max_velocity * velocity / speed[..., None, None, None]
    return velocity


def coarsen(velocity: Tensor, factor: int) -> Tensor:
    """Block mean over ``factor × factor`` cells of each component (SDA's coarsening)."""
    if factor == 1:
        return velocity
    *batch, h, w = velocity.shape
    blocks = velocity.reshape(*batch, h // factor, factor, w // factor, factor)
    return blocks.mean(dim=(-3, -1))


def rollout(
    velocity: Tensor,
    transitions: int,
    inner_steps: int,
    *,
    burn_in: int = 0,
    factor: int = 1,
    compile: bool = False,
    poll: Callable[[], None] | None = None,
    **physics: float,
) -> Tensor:
    """Stored states after transitions ``burn_in + 1 … transitions``, coarsened.

    Each transition is ``inner_steps`` inner steps. Returns
    ``(B, transitions - burn_in, 2, N // factor, N // factor)`` on the input's device.
    ``poll()`` is called after every transition; an exception it raises ends the rollout
    (how a data set generation stops promptly on a signal).
    """
    if not 0 <= burn_in < transitions:
        raise ValueError(f"burn_in must be in [0, transitions), got {burn_in}")
    states = []
    for transition in range(1, transitions + 1):
        velocity = advance(velocity, inner_steps, compile=compile, **physics)
        if poll is not None:
            poll()
        if transition > burn_in:
            states.append(coarsen(velocity, factor))
    return torch.stack(states, dim=-4)
