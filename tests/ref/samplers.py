"""samplers.py: reference for tests/test_samplers.c -- the diffusers 0.25 schedulers (DDIM,
Euler, Euler ancestral, Heun, DPM-Solver++ 2M, LMS; Karras sigmas) re-implemented operation for
operation in torch float32 / numpy float64 as diffusers computes them (diffusers is not in
Debian). Before writing anything the script reproduces every case of the golden
scheduler_cases.safetensors with these classes, so the v-prediction, SD-2, seeded-ancestral,
img2img and other-config cases below come from code that is checked against diffusers itself.
Each case's settings are in the metadata (`case.NAME`, JSON) so the C test reads them."""
import json
import math
import os
import struct
import sys

import numpy as np
import torch

import lkref

F32 = torch.float32

SD1 = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
       "beta_schedule": "scaled_linear", "steps_offset": 1, "prediction_type": "epsilon",
       "clip_sample": False, "set_alpha_to_one": False}
# stabilityai/stable-diffusion-2(-1) scheduler_config.json, with timestep_spacing spelled out
SD2 = dict(SD1, prediction_type="v_prediction", timestep_spacing="leading")
SD2_DEFAULT_SPACING = dict(SD1, prediction_type="v_prediction")
LINEAR_TRAILING = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02,
                   "beta_schedule": "linear", "steps_offset": 0, "prediction_type": "epsilon",
                   "clip_sample": False, "set_alpha_to_one": True, "timestep_spacing": "trailing"}
COSINE_LINSPACE = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02,
                   "beta_schedule": "squaredcos_cap_v2", "steps_offset": 0,
                   "prediction_type": "epsilon", "clip_sample": False,
                   "set_alpha_to_one": False, "timestep_spacing": "linspace"}


# ---- betas (diffusers.schedulers.*.__init__) ----
def betas_for_alpha_bar(n, max_beta=0.999):
    def alpha_bar(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    betas = []
    for i in range(n):
        t1, t2 = i / n, (i + 1) / n
        betas.append(min(1 - alpha_bar(t2) / alpha_bar(t1), max_beta))
    return torch.tensor(betas, dtype=F32)


def alphas_cumprod(cfg):
    n, b0, b1 = cfg["num_train_timesteps"], cfg["beta_start"], cfg["beta_end"]
    if cfg["beta_schedule"] == "linear":
        betas = torch.linspace(b0, b1, n, dtype=F32)
    elif cfg["beta_schedule"] == "scaled_linear":
        betas = torch.linspace(b0 ** 0.5, b1 ** 0.5, n, dtype=F32) ** 2
    else:
        betas = betas_for_alpha_bar(n)
    return torch.cumprod(1.0 - betas, dim=0)


class Base:
    default_spacing = "linspace"
    order = 1

    def __init__(self, cfg, karras=False):
        self.cfg = dict(cfg)
        self.cfg.setdefault("timestep_spacing", self.default_spacing)
        self.N = cfg["num_train_timesteps"]
        self.ac = alphas_cumprod(cfg)
        self.karras = karras
        self.pred = cfg["prediction_type"]
        self._step_index = None

    # Euler/Heun/LMS/EulerA share these (copied from EulerDiscreteScheduler)
    def _sigma_to_t(self, sigma, log_sigmas):
        log_sigma = np.log(np.maximum(sigma, 1e-10))
        dists = log_sigma - log_sigmas[:, np.newaxis]
        low_idx = np.cumsum((dists >= 0), axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
        high_idx = low_idx + 1
        low = log_sigmas[low_idx]
        high = log_sigmas[high_idx]
        w = (low - log_sigma) / (low - high)
        w = np.clip(w, 0, 1)
        t = (1 - w) * low_idx + w * high_idx
        t = t.reshape(sigma.shape)
        return t

    def _convert_to_karras(self, in_sigmas, num_inference_steps):
        sigma_min = in_sigmas[-1].item()
        sigma_max = in_sigmas[0].item()
        rho = 7.0
        ramp = np.linspace(0, 1, num_inference_steps)
        min_inv_rho = sigma_min ** (1 / rho)
        max_inv_rho = sigma_max ** (1 / rho)
        return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho

    def spaced(self, n, dtype):
        sp = self.cfg["timestep_spacing"]
        N = self.N
        if sp == "linspace":
            return np.linspace(0, N - 1, n, dtype=dtype)[::-1].copy()
        if sp == "leading":
            r = N // n
            t = (np.arange(0, n) * r).round()[::-1].copy().astype(dtype)
            t += self.cfg["steps_offset"]
            return t
        r = N / n
        t = (np.arange(N, 0, -r)).round().copy().astype(dtype)
        t -= 1
        return t

    def init_step_index(self, timestep):
        cand = (self.timesteps == timestep).nonzero()
        self._step_index = (cand[1] if len(cand) > 1 else cand[0]).item()

    def scale_model_input(self, sample, timestep):
        if self._step_index is None:
            self.init_step_index(timestep)
        sigma = self.sigmas[self._step_index]
        return sample / ((sigma ** 2 + 1) ** 0.5)

    @property
    def init_noise_sigma(self):
        m = self.sigmas.max()
        if self.cfg["timestep_spacing"] in ["linspace", "trailing"]:
            return m
        return (m ** 2 + 1) ** 0.5

    def add_noise(self, x0, noise, t):
        idx = [(self.timesteps == t).nonzero().item()]
        return x0 + noise * self.sigmas[idx].flatten()[0]

    def x0_from(self, model_output, sample, sigma):
        if self.pred == "epsilon":
            return sample - sigma * model_output
        return model_output * (-sigma / (sigma ** 2 + 1) ** 0.5) + (sample / (sigma ** 2 + 1))


class DDIM(Base):
    default_spacing = "leading"

    def __init__(self, cfg, eta=0.0):
        super().__init__(cfg)
        self.final_alpha_cumprod = torch.tensor(1.0) if cfg["set_alpha_to_one"] else self.ac[0]
        self.eta = eta
        self.sigmas = None

    def set_timesteps(self, n):
        self.n = n
        sp, N = self.cfg["timestep_spacing"], self.N
        if sp == "linspace":
            t = np.linspace(0, N - 1, n).round()[::-1].copy().astype(np.int64)
        elif sp == "leading":
            r = N // n
            t = (np.arange(0, n) * r).round()[::-1].copy().astype(np.int64)
            t += self.cfg["steps_offset"]
        else:
            r = N / n
            t = np.round(np.arange(N, 0, -r)).astype(np.int64)
            t -= 1
        self.timesteps = torch.from_numpy(t)

    @property
    def init_noise_sigma(self):
        return 1.0

    def scale_model_input(self, sample, timestep):
        return sample

    def add_noise(self, x0, noise, t):
        a = self.ac[t] ** 0.5
        b = (1 - self.ac[t]) ** 0.5
        return a * x0 + b * noise

    def step(self, model_output, timestep, sample, generator=None):
        prev_timestep = timestep - self.N // self.n
        alpha_prod_t = self.ac[timestep]
        alpha_prod_t_prev = self.ac[prev_timestep] if prev_timestep >= 0 else self.final_alpha_cumprod
        beta_prod_t = 1 - alpha_prod_t
        if self.pred == "epsilon":
            pred_x0 = (sample - beta_prod_t ** (0.5) * model_output) / alpha_prod_t ** (0.5)
            pred_eps = model_output
        else:
            pred_x0 = (alpha_prod_t ** 0.5) * sample - (beta_prod_t ** 0.5) * model_output
            pred_eps = (alpha_prod_t ** 0.5) * model_output + (beta_prod_t ** 0.5) * sample
        if self.cfg.get("clip_sample"):
            r = self.cfg.get("clip_sample_range", 1.0)
            pred_x0 = pred_x0.clamp(-r, r)
        beta_prod_t_prev = 1 - alpha_prod_t_prev
        variance = (beta_prod_t_prev / beta_prod_t) * (1 - alpha_prod_t / alpha_prod_t_prev)
        std_dev_t = self.eta * variance ** (0.5)
        direction = (1 - alpha_prod_t_prev - std_dev_t ** 2) ** (0.5) * pred_eps
        prev = alpha_prod_t_prev ** (0.5) * pred_x0 + direction
        if self.eta > 0:
            noise = torch.randn(model_output.shape, generator=generator, dtype=model_output.dtype)
            prev = prev + std_dev_t * noise
        return prev


class Euler(Base):
    def set_timesteps(self, n):
        self.n = n
        timesteps = self.spaced(n, np.float32)
        sigmas = np.array(((1 - self.ac) / self.ac) ** 0.5)
        log_sigmas = np.log(sigmas)
        sigmas = np.interp(timesteps, np.arange(0, len(sigmas)), sigmas)
        if self.karras:
            sigmas = self._convert_to_karras(sigmas, n)
            timesteps = np.array([self._sigma_to_t(s, log_sigmas) for s in sigmas])
        sigmas = np.concatenate([sigmas, [0.0]]).astype(np.float32)
        self.sigmas = torch.from_numpy(sigmas)
        self.timesteps = torch.from_numpy(timesteps.astype(np.float32))
        self._step_index = None

    def step(self, model_output, timestep, sample, generator=None):
        if self._step_index is None:
            self.init_step_index(timestep)
        sample = sample.to(torch.float32)
        sigma = self.sigmas[self._step_index]
        gamma = 0.0
        noise = torch.randn(model_output.shape, dtype=model_output.dtype, generator=generator)
        sigma_hat = sigma * (gamma + 1)
        if self.pred == "epsilon":
            pred_x0 = sample - sigma_hat * model_output
        else:
            pred_x0 = model_output * (-sigma / (sigma ** 2 + 1) ** 0.5) + (sample / (sigma ** 2 + 1))
        derivative = (sample - pred_x0) / sigma_hat
        dt = self.sigmas[self._step_index + 1] - sigma_hat
        prev = sample + derivative * dt
        del noise
        self._step_index += 1
        return prev


class EulerA(Base):
    def set_timesteps(self, n):
        self.n = n
        timesteps = self.spaced(n, np.float32)
        sigmas = np.array(((1 - self.ac) / self.ac) ** 0.5)
        sigmas = np.interp(timesteps, np.arange(0, len(sigmas)), sigmas)
        sigmas = np.concatenate([sigmas, [0.0]]).astype(np.float32)
        self.sigmas = torch.from_numpy(sigmas)
        self.timesteps = torch.from_numpy(timesteps)
        self._step_index = None

    def step(self, model_output, timestep, sample, generator=None):
        if self._step_index is None:
            self.init_step_index(timestep)
        sigma = self.sigmas[self._step_index]
        pred_x0 = self.x0_from(model_output, sample, sigma)
        sigma_from = self.sigmas[self._step_index]
        sigma_to = self.sigmas[self._step_index + 1]
        sigma_up = (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5
        sigma_down = (sigma_to ** 2 - sigma_up ** 2) ** 0.5
        derivative = (sample - pred_x0) / sigma
        dt = sigma_down - sigma
        prev = sample + derivative * dt
        noise = torch.randn(model_output.shape, dtype=model_output.dtype, generator=generator)
        prev = prev + noise * sigma_up
        self._step_index += 1
        return prev


class Heun(Base):
    order = 2

    def set_timesteps(self, n):
        self.n = n
        timesteps = self.spaced(n, float)
        sigmas = np.array(((1 - self.ac) / self.ac) ** 0.5)
        log_sigmas = np.log(sigmas)
        sigmas = np.interp(timesteps, np.arange(0, len(sigmas)), sigmas)
        if self.karras:
            sigmas = self._convert_to_karras(sigmas, n)
            timesteps = np.array([self._sigma_to_t(s, log_sigmas) for s in sigmas])
        sigmas = np.concatenate([sigmas, [0.0]]).astype(np.float32)
        sigmas = torch.from_numpy(sigmas)
        self.sigmas = torch.cat([sigmas[:1], sigmas[1:-1].repeat_interleave(2), sigmas[-1:]])
        timesteps = torch.from_numpy(timesteps)
        self.timesteps = torch.cat([timesteps[:1], timesteps[1:].repeat_interleave(2)])
        self.prev_derivative = None
        self.dt = None
        self._step_index = None

    def add_noise(self, x0, noise, t):
        cand = (self.timesteps == t).nonzero()
        idx = (cand[1] if len(cand) > 1 else cand[0]).item()
        return x0 + noise * self.sigmas[idx]

    def step(self, model_output, timestep, sample, generator=None):
        if self._step_index is None:
            self.init_step_index(timestep)
        first = self.dt is None
        if first:
            sigma = self.sigmas[self._step_index]
            sigma_next = self.sigmas[self._step_index + 1]
        else:
            sigma = self.sigmas[self._step_index - 1]
            sigma_next = self.sigmas[self._step_index]
        gamma = 0
        sigma_hat = sigma * (gamma + 1)
        sigma_input = sigma_hat if first else sigma_next
        if self.pred == "epsilon":
            pred_x0 = sample - sigma_input * model_output
        else:
            pred_x0 = model_output * (-sigma_input / (sigma_input ** 2 + 1) ** 0.5) + (
                sample / (sigma_input ** 2 + 1))
        if self.cfg.get("clip_sample"):
            r = self.cfg.get("clip_sample_range", 1.0)
            pred_x0 = pred_x0.clamp(-r, r)
        if first:
            derivative = (sample - pred_x0) / sigma_hat
            dt = sigma_next - sigma_hat
            self.prev_derivative, self.dt, self.sample = derivative, dt, sample
        else:
            derivative = (sample - pred_x0) / sigma_next
            derivative = (self.prev_derivative + derivative) / 2
            dt, sample = self.dt, self.sample
            self.prev_derivative = self.dt = self.sample = None
        prev = sample + derivative * dt
        self._step_index += 1
        return prev


def lms_coefficient_exact(sig, order, t, j):
    """diffusers' get_lms_coefficient (scipy quad of the Lagrange basis polynomial) done exactly:
    the integrand is a polynomial of degree order-1 in tau."""
    poly = np.poly1d([1.0])
    for k in range(order):
        if k == j:
            continue
        poly = poly * np.poly1d([1.0, -float(sig[t - k])]) / (float(sig[t - j]) - float(sig[t - k]))
    P = np.polyint(poly)
    return float(P(float(sig[t + 1])) - P(float(sig[t])))


class LMS(Base):
    def set_timesteps(self, n):
        self.n = n
        timesteps = self.spaced(n, np.float32)
        sigmas = np.array(((1 - self.ac) / self.ac) ** 0.5)
        log_sigmas = np.log(sigmas)
        sigmas = np.interp(timesteps, np.arange(0, len(sigmas)), sigmas)
        if self.karras:
            sigmas = self._convert_to_karras(sigmas, n)
            timesteps = np.array([self._sigma_to_t(s, log_sigmas) for s in sigmas])
        sigmas = np.concatenate([sigmas, [0.0]]).astype(np.float32)
        self.sigmas = torch.from_numpy(sigmas)
        self.timesteps = torch.from_numpy(timesteps)
        self._step_index = None
        self.derivatives = []

    def step(self, model_output, timestep, sample, generator=None, order=4):
        if self._step_index is None:
            self.init_step_index(timestep)
        sigma = self.sigmas[self._step_index]
        pred_x0 = self.x0_from(model_output, sample, sigma)
        derivative = (sample - pred_x0) / sigma
        self.derivatives.append(derivative)
        if len(self.derivatives) > order:
            self.derivatives.pop(0)
        order = min(self._step_index + 1, order)
        coeffs = [lms_coefficient_exact(self.sigmas, order, self._step_index, j) for j in range(order)]
        prev = sample + sum(c * d for c, d in zip(coeffs, reversed(self.derivatives)))
        self._step_index += 1
        return prev


class DPM(Base):
    """DPMSolverMultistepScheduler, algorithm_type dpmsolver++, solver_order 2, midpoint,
    lower_order_final True, euler_at_final False, lambda_min_clipped -inf."""

    def set_timesteps(self, n):
        last_timestep = self.N  # lambda_min_clipped = -inf: clipped_idx = 0
        sp = self.cfg["timestep_spacing"]
        if sp == "linspace":
            timesteps = np.linspace(0, last_timestep - 1, n + 1).round()[::-1][:-1].copy().astype(np.int64)
        elif sp == "leading":
            r = last_timestep // (n + 1)
            timesteps = (np.arange(0, n + 1) * r).round()[::-1][:-1].copy().astype(np.int64)
            timesteps += self.cfg["steps_offset"]
        else:
            r = self.N / n
            timesteps = np.arange(last_timestep, 0, -r).round().copy().astype(np.int64)
            timesteps -= 1
        sigmas = np.array(((1 - self.ac) / self.ac) ** 0.5)
        log_sigmas = np.log(sigmas)
        if self.karras:
            sigmas = np.flip(sigmas).copy()
            sigmas = self._convert_to_karras(sigmas, n)
            timesteps = np.array([self._sigma_to_t(s, log_sigmas) for s in sigmas]).round()
            sigmas = np.concatenate([sigmas, sigmas[-1:]]).astype(np.float32)
        else:
            sigmas = np.interp(timesteps, np.arange(0, len(sigmas)), sigmas)
            sigma_last = ((1 - self.ac[0]) / self.ac[0]) ** 0.5
            sigmas = np.concatenate([sigmas, [sigma_last]]).astype(np.float32)
        self.sigmas = torch.from_numpy(sigmas)
        _, unique_indices = np.unique(timesteps, return_index=True)
        timesteps = timesteps[np.sort(unique_indices)]
        self.timesteps = torch.from_numpy(timesteps).to(dtype=torch.int64)
        self.model_outputs = [None, None]
        self.lower_order_nums = 0
        self._step_index = None

    @property
    def init_noise_sigma(self):
        return 1.0

    def init_step_index(self, timestep):
        cand = (self.timesteps == timestep).nonzero()
        if len(cand) == 0:
            self._step_index = len(self.timesteps) - 1
        elif len(cand) > 1:
            self._step_index = cand[1].item()
        else:
            self._step_index = cand[0].item()

    def scale_model_input(self, sample, timestep):
        return sample

    def _alpha_sigma(self, sigma):
        alpha_t = 1 / ((sigma ** 2 + 1) ** 0.5)
        return alpha_t, sigma * alpha_t

    def add_noise(self, x0, noise, t):
        cand = (self.timesteps == t).nonzero()
        if len(cand) == 0:
            idx = len(self.timesteps) - 1
        elif len(cand) > 1:
            idx = cand[1].item()
        else:
            idx = cand[0].item()
        alpha_t, sigma_t = self._alpha_sigma(self.sigmas[[idx]].flatten()[0])
        return alpha_t * x0 + sigma_t * noise

    def convert(self, model_output, sample):
        sigma = self.sigmas[self._step_index]
        alpha_t, sigma_t = self._alpha_sigma(sigma)
        if self.pred == "epsilon":
            return (sample - sigma_t * model_output) / alpha_t
        return alpha_t * sample - sigma_t * model_output

    def first_order(self, m, sample):
        sigma_t, sigma_s = self.sigmas[self._step_index + 1], self.sigmas[self._step_index]
        alpha_t, sigma_t = self._alpha_sigma(sigma_t)
        alpha_s, sigma_s = self._alpha_sigma(sigma_s)
        lambda_t = torch.log(alpha_t) - torch.log(sigma_t)
        lambda_s = torch.log(alpha_s) - torch.log(sigma_s)
        h = lambda_t - lambda_s
        return (sigma_t / sigma_s) * sample - (alpha_t * (torch.exp(-h) - 1.0)) * m

    def second_order(self, outs, sample):
        sigma_t, sigma_s0, sigma_s1 = (self.sigmas[self._step_index + 1], self.sigmas[self._step_index],
                                       self.sigmas[self._step_index - 1])
        alpha_t, sigma_t = self._alpha_sigma(sigma_t)
        alpha_s0, sigma_s0 = self._alpha_sigma(sigma_s0)
        alpha_s1, sigma_s1 = self._alpha_sigma(sigma_s1)
        lambda_t = torch.log(alpha_t) - torch.log(sigma_t)
        lambda_s0 = torch.log(alpha_s0) - torch.log(sigma_s0)
        lambda_s1 = torch.log(alpha_s1) - torch.log(sigma_s1)
        m0, m1 = outs[-1], outs[-2]
        h, h_0 = lambda_t - lambda_s0, lambda_s0 - lambda_s1
        r0 = h_0 / h
        D0, D1 = m0, (1.0 / r0) * (m0 - m1)
        return ((sigma_t / sigma_s0) * sample - (alpha_t * (torch.exp(-h) - 1.0)) * D0
                - 0.5 * (alpha_t * (torch.exp(-h) - 1.0)) * D1)

    def step(self, model_output, timestep, sample, generator=None):
        if self._step_index is None:
            self.init_step_index(timestep)
        nt = len(self.timesteps)
        lower_order_final = (self._step_index == nt - 1) and (nt < 15)
        m = self.convert(model_output, sample)
        self.model_outputs[0] = self.model_outputs[1]
        self.model_outputs[1] = m
        if self.lower_order_nums < 1 or lower_order_final:
            prev = self.first_order(m, sample)
        else:
            prev = self.second_order(self.model_outputs, sample)
        if self.lower_order_nums < 2:
            self.lower_order_nums += 1
        self._step_index += 1
        return prev


KINDS = {
    "ddim": lambda c, eta: DDIM(c, eta),
    "euler": lambda c, eta: Euler(c),
    "euler_karras": lambda c, eta: Euler(c, karras=True),
    "euler_a": lambda c, eta: EulerA(c),
    "heun": lambda c, eta: Heun(c),
    "heun_karras": lambda c, eta: Heun(c, karras=True),
    "dpmpp_2m": lambda c, eta: DPM(c),
    "dpmpp_2m_karras": lambda c, eta: DPM(c, karras=True),
    "lms": lambda c, eta: LMS(c),
    "lms_karras": lambda c, eta: LMS(c, karras=True),
}


def fake_model(x_in, t):
    """The golden fixtures' model: t enters as a Python number (0.001 * t in double, then f32);
    with this the classes above reproduce the golden DDIM/Euler/Heun/DPM++ latents bit for bit."""
    return 0.5 * torch.tanh(x_in) + 0.001 * float(t)


def run_case(kind, cfg, steps, x0, strength=1.0, eta=0.0, seed=None, noise=None):
    """StableDiffusion(Img2Img)Pipeline's denoising loop around the fake model. Returns
    (scheduler, timesteps used, stack of latents, generator)."""
    s = KINDS[kind](cfg, eta)
    s.set_timesteps(steps)
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    timesteps = s.timesteps
    if strength < 1.0:
        init_timestep = min(int(steps * strength), steps)
        t_start = max(steps - init_timestep, 0)
        timesteps = s.timesteps[t_start * s.order:]
        x = s.add_noise(x0, noise, timesteps[:1][0])
    else:
        x = x0 * s.init_noise_sigma
    xs, xins, epss = [x], [], []
    for t in timesteps:
        x_in = s.scale_model_input(x, t)
        eps = fake_model(x_in, t)
        x = s.step(eps, t, x, generator=gen)
        xs.append(x)
        xins.append(x_in)
        epss.append(eps)
    s.trace = (torch.stack(xins), torch.stack(epss))
    return s, timesteps, torch.stack(xs), gen


# ---- check the classes against the golden fixtures made with diffusers 0.25 ----
def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        dt = {"F32": torch.float32, "I64": torch.int64}[v["dtype"]]
        out[k] = torch.frombuffer(bytearray(data[a:b]), dtype=dt).reshape(v["shape"]).clone()
    return out


def close(what, got, want, atol, rtol, scale_atol=0.0):
    """|got - want| <= atol + scale_atol * max|want| (per leading index) + rtol * |want|"""
    got, want = got.double(), want.double()
    d = (got - want).abs()
    scale = want.abs().reshape(want.shape[0], -1).max(dim=1)[0] if want.dim() > 1 else want.abs().max()
    if want.dim() > 1:
        scale = scale.reshape([-1] + [1] * (want.dim() - 1))
    ok = bool((d <= atol + scale_atol * scale + rtol * want.abs()).all())
    print("%s golden %s: max_abs=%.3g, %d of %d differ" % ("ok  " if ok else "FAIL", what, d.max().item(),
                                                        int((d != 0).sum()), d.numel()))
    return ok


def check_golden():
    gdir = os.environ.get("LK_GOLDEN_DIR") or os.path.join(os.path.dirname(__file__), "..", "..", "..",
                                                             "shared", "golden")
    path = os.path.join(gdir, "scheduler_cases.safetensors")
    if not os.path.exists(path):
        print("golden %s not found: reference classes not cross-checked" % path)
        return
    g = read_safetensors(path)
    ok = close("alphas_cumprod", alphas_cumprod(SD1), g["alphas_cumprod"], 0, 0)
    for kind in ["ddim", "euler", "euler_karras", "heun", "dpmpp_2m", "dpmpp_2m_karras", "lms"]:
        s, ts, xs, _ = run_case(kind, SD1, 10, g["x0"])
        ok &= close(kind + ".timesteps", ts.float(), g[kind + ".timesteps"], 1e-4, 1e-6)
        if kind != "ddim":
            ok &= close(kind + ".sigmas", s.sigmas, g[kind + ".sigmas"], 0, 1e-6)
        ok &= close(kind + ".x", xs, g[kind + ".x"], 0, 1e-5, 1e-6)
    d = DDIM(SD1)
    for i, t in enumerate(g["ddpm_add_noise.t"].tolist()):
        ok &= close("add_noise t=%d" % t, d.add_noise(g["x0"], g["ddpm_add_noise.noise"], t),
                    g["ddpm_add_noise.noisy"][i], 1e-6, 1e-6)
    if not ok:
        sys.exit("reference schedulers disagree with the golden diffusers outputs")


CASES = [
    # name, kind, config, steps, extra
    # the golden cases again, so that the C test can also check them one update at a time
    ("sd1_ddim", "ddim", SD1, 10, {}),
    ("sd1_euler", "euler", SD1, 10, {}),
    ("sd1_euler_karras", "euler_karras", SD1, 10, {}),
    ("sd1_heun", "heun", SD1, 10, {}),
    ("sd1_dpmpp_2m", "dpmpp_2m", SD1, 10, {}),
    ("sd1_dpmpp_2m_karras", "dpmpp_2m_karras", SD1, 10, {}),
    ("sd1_lms", "lms", SD1, 10, {}),
    ("sd2_ddim", "ddim", SD2, 10, {}),
    ("sd2_ddim_eta", "ddim", SD2, 12, {"eta": 0.7, "seed": 31}),
    ("sd2_euler", "euler", SD2, 10, {"seed": 5}),
    ("sd2d_euler", "euler", SD2_DEFAULT_SPACING, 13, {}),
    ("sd2_euler_karras", "euler_karras", SD2, 9, {}),
    ("sd2_euler_a", "euler_a", SD2, 10, {"seed": 1234}),
    ("euler_a", "euler_a", SD1, 10, {"seed": 42}),
    ("euler_a_20", "euler_a", SD1, 20, {"seed": 7}),
    ("sd2_heun", "heun", SD2, 8, {}),
    ("heun_karras", "heun_karras", SD1, 6, {}),
    ("sd2_dpmpp_2m", "dpmpp_2m", SD2, 10, {}),
    ("sd2_dpmpp_2m_karras", "dpmpp_2m_karras", SD2_DEFAULT_SPACING, 11, {}),
    ("dpmpp_2m_20", "dpmpp_2m", SD1, 20, {}),
    ("dpmpp_2m_karras_30", "dpmpp_2m_karras", SD1, 30, {}),
    ("dpmpp_2m_karras_50", "dpmpp_2m_karras", SD1, 50, {}),  # a repeated timestep is dropped
    ("sd2_lms", "lms", SD2, 10, {}),
    ("lms_25", "lms", SD1, 25, {}),
    ("lms_karras", "lms_karras", SD1, 12, {}),
    ("lin_ddim", "ddim", LINEAR_TRAILING, 7, {}),
    ("lin_euler", "euler", LINEAR_TRAILING, 7, {}),
    ("lin_dpmpp_2m", "dpmpp_2m", LINEAR_TRAILING, 7, {}),
    ("cos_ddim", "ddim", COSINE_LINSPACE, 9, {}),
    ("cos_euler_a", "euler_a", COSINE_LINSPACE, 9, {"seed": 99}),
    ("cos_lms", "lms", COSINE_LINSPACE, 9, {}),
    ("clip_ddim", "ddim", dict(SD1, clip_sample=True, set_alpha_to_one=True), 10, {}),
    ("clip_heun", "heun", dict(SD1, clip_sample=True, clip_sample_range=2.5), 5, {}),
    # img2img: StableDiffusionImg2ImgPipeline.get_timesteps + scheduler.add_noise
    ("i2i_ddim", "ddim", SD1, 10, {"strength": 0.75}),
    ("i2i_euler", "euler", SD1, 10, {"strength": 0.6}),
    ("i2i_euler_a", "euler_a", SD1, 10, {"strength": 0.5, "seed": 3}),
    ("i2i_heun", "heun", SD1, 10, {"strength": 0.7}),
    ("i2i_dpmpp_2m", "dpmpp_2m", SD1, 10, {"strength": 0.45}),
    ("i2i_dpmpp_2m_karras", "dpmpp_2m_karras", SD2, 12, {"strength": 0.8}),
    ("i2i_lms", "lms", SD1, 10, {"strength": 0.55}),
    ("i2i_sd2_euler", "euler", SD2, 10, {"strength": 0.3}),
]


def ddpm_training(T, meta):
    """DDPMScheduler.add_noise / get_velocity and training_utils.compute_snr (+ min-SNR weights,
    Hang et al. 2023, as in diffusers' train_text_to_image.py) on the SD-1 and SD-2 schedules."""
    x0 = torch.randn(2, 4, 4, 4)
    noise = torch.randn(2, 4, 4, 4)
    t = torch.tensor([0, 1, 17, 500, 998, 999], dtype=torch.int64)
    T["ddpm.x0"], T["ddpm.noise"], T["ddpm.t"] = x0, noise, t
    ac = alphas_cumprod(SD1)
    for i, ti in enumerate(t.tolist()):
        sa = ac[ti] ** 0.5
        so = (1 - ac[ti]) ** 0.5
        T["ddpm.noisy.%d" % i] = sa * x0 + so * noise
        T["ddpm.velocity.%d" % i] = sa * noise - so * x0
    sqrt_ac = ac ** 0.5
    sqrt_1m = (1.0 - ac) ** 0.5
    snr = (sqrt_ac[t].float() / sqrt_1m[t].float()) ** 2
    T["ddpm.snr"] = snr
    gamma = 5.0
    w = torch.stack([snr, gamma * torch.ones_like(t)], dim=1).min(dim=1)[0]
    T["ddpm.minsnr_eps"] = w / snr
    T["ddpm.minsnr_v"] = w / (snr + 1)
    meta["ddpm"] = json.dumps({"config": SD1, "snr_gamma": gamma})
    T["ac.linear"] = alphas_cumprod(LINEAR_TRAILING)
    T["ac.cosine"] = alphas_cumprod(COSINE_LINSPACE)
    T["ac.sd1"] = ac


def main():
    out = lkref.out_path()
    lkref.setup(2024)
    check_golden()
    T, meta = {}, {}
    x0 = torch.randn(1, 4, 8, 8)
    noise = torch.randn(1, 4, 8, 8)
    T["x0"], T["noise"] = x0, noise
    names = []
    for name, kind, cfg, steps, extra in CASES:
        s, ts, xs, gen = run_case(kind, cfg, steps, x0, strength=extra.get("strength", 1.0),
                                  eta=extra.get("eta", 0.0), seed=extra.get("seed"), noise=noise)
        T[name + ".timesteps"] = s.timesteps.float()
        if getattr(s, "sigmas", None) is not None:
            T[name + ".sigmas"] = s.sigmas.float()
        T[name + ".x"] = xs.float()
        T[name + ".x_in"], T[name + ".model_out"] = s.trace  # per model call
        if gen is not None:
            T[name + ".rng_after"] = torch.randn(8, generator=gen)
        meta["case." + name] = json.dumps({"kind": kind, "config": cfg, "steps": steps,
                                           "strength": extra.get("strength", 1.0),
                                           "eta": extra.get("eta", 0.0),
                                           "seed": extra.get("seed", -1),
                                           "init_noise_sigma": float(s.init_noise_sigma)})
        names.append(name)
    meta["cases"] = ",".join(names)
    ddpm_training(T, meta)
    lkref.save(out, T, meta)


if __name__ == "__main__":
    main()
