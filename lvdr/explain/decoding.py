"""LVDR's reasoning states decoded into images (as VITAL and MedLVR decode theirs), and checked.

Every test sequence gets one fixed noise x_T: the deterministic DDIM inversion of its central slice,
conditioned on that slice's stage-1 z. Decoding the PRM's per-step latent z_t from that same x_T
shows "what the model believes the scan looks like after t slices"; at t = T it is the decode of
z_sem. Whether a decoded image carries the model's belief is measured, not assumed: the stage-1
encoder re-encodes it, the stage-1 latent classifier (DiffAE+LR) grades it, and that grade is
compared with the grade the PRM's head gives z_t at the same step. How sure the decoder is of
z_sem's image: decodes with DDIM eta > 0 from the same x_T, and their pixel-wise sd.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import binomtest
from tqdm import tqdm

from lvdr.data import to_model_range
from lvdr.diffae.sampling import decode, encode_noise
from lvdr.explain.plots import plt, save_figure, show
from lvdr.predictions import decide

CHUNK = 32  # images decoded per batch: on a CPU, larger batches are slower per image (demo: 7 ms at 32, 10 ms at 256)


def central_rows(trajs: list[dict]) -> np.ndarray:
    """The slice-table row of each sequence's central slice (of the slices the PRM read)."""
    return np.array([tr["row"][len(tr["row"]) // 2] for tr in trajs])


@torch.no_grad()
def fixed_noise(diffae, slices: np.ndarray, rows: np.ndarray, cfg: dict, steps: int) -> torch.Tensor:
    """x_T of each row's slice: its DDIM inversion conditioned on its own stage-1 z, (n, C, H, W)."""
    out = []
    for start in range(0, len(rows), CHUNK):
        x0 = to_model_range(slices[rows[start:start + CHUNK]])
        z, _ = diffae.encode(x0)
        out.append(encode_noise(diffae.decoder, x0, z, cfg, steps))
    return torch.cat(out)


@torch.no_grad()
def decode_latents(diffae, x_t: torch.Tensor, z: np.ndarray, cfg: dict, steps: int, eta: float = 0.0,
                   generator: torch.Generator | None = None, desc: str | None = None) -> np.ndarray:
    """Images (n, C, H, W) in [0, 1] decoded from the latents z (n, d), each from its x_T (n, C, H, W);
    ``desc`` labels a progress bar."""
    z = torch.as_tensor(np.asarray(z, dtype=np.float32))
    starts = range(0, len(z), CHUNK)
    images = [decode(diffae.decoder, x_t[i:i + CHUNK], z[i:i + CHUNK], cfg, steps, eta=eta, generator=generator)
              for i in tqdm(starts, desc=desc, unit="batch", disable=desc is None or len(starts) < 2, leave=False)]
    return ((torch.cat(images).numpy() + 1) / 2).clip(0, 1)


@torch.no_grad()
def grade_images(diffae, classifier, num_classes: int, images: np.ndarray) -> np.ndarray:
    """Class probabilities (n, C) the stage-1 latent classifier gives the images once re-encoded."""
    from lvdr.baselines.latent import full_probs

    z = torch.cat([diffae.encode(torch.as_tensor(images[i:i + CHUNK]) * 2 - 1)[0] for i in range(0, len(images), CHUNK)])
    return full_probs(classifier, z.numpy().astype(np.float64), num_classes)


@torch.no_grad()
def head_probs(prm, z: np.ndarray) -> np.ndarray:
    """The PRM's own class probabilities for latents z (n, d): its grading head, as at z_sem."""
    return prm.grade(torch.as_tensor(np.asarray(z, dtype=np.float32))).softmax(-1).numpy()


def inside_outside(values: np.ndarray, masks: np.ndarray | None) -> dict:
    """Mean of per-image maps (n, H, W) over all pixels, and inside and outside each image's mask (n, H, W);
    None where no image has pixels there (no mask, or none of the slices shows the region)."""
    out = {"all": float(values.mean())}
    if masks is not None:
        masks = np.asarray(masks, dtype=bool)
        for key, where in (("inside", masks), ("outside", ~masks)):
            means = [v[m].mean() for v, m in zip(values, where) if m.any()]
            out[key] = float(np.mean(means)) if means else None
    return out


def chance_agreement(a: np.ndarray, b: np.ndarray, num_classes: int) -> float:
    """The agreement two independent graders with these marginal class frequencies would reach."""
    pa, pb = (np.bincount(x, minlength=num_classes) / len(x) for x in (a, b))
    return float(pa @ pb)


def decoded_states(prm, diffae, classifier, trajs: list[dict], x_t: torch.Tensor, cfg: dict, steps: int,
                   threshold: float | None = None) -> dict:
    """Decode every step of every trajectory from its sequence's x_T; grade each decode by re-encoding.
    ``threshold``: the PRM's binary decision threshold (the classifier decides as it does in its own predictions).

    Returns per sequence the decoded images (T, C, H, W), the PRM's grade at each step and the
    re-encoded grade; and the agreement of the two over all steps and at the last step (z_sem), with
    the agreement chance alone would give and a one-sided binomial test of the last step against it.
    """
    num_classes = prm.head.out_features
    lengths = [len(tr["z"]) for tr in trajs]
    owner = np.repeat(np.arange(len(trajs)), lengths)
    z = np.concatenate([tr["z"] for tr in trajs])
    images = decode_latents(diffae, x_t[torch.as_tensor(owner)], z, cfg, steps, desc="decode reasoning states")
    own = decide(head_probs(prm, z), threshold)
    reread = decide(grade_images(diffae, classifier, num_classes, images))  # the classifier's own decision rule
    ends = np.cumsum(lengths)
    last = ends - 1
    agree_last = int((own[last] == reread[last]).sum())
    chance = chance_agreement(own[last], reread[last], num_classes)
    by_step = {}
    for t in range(max(lengths)):
        at = np.array([start + t for start, n in zip(ends - lengths, lengths) if t < n])
        by_step[t + 1] = float(np.mean(own[at] == reread[at]))
    return {
        "n_sequences": len(trajs), "n_steps": int(len(z)),
        "agreement": float(np.mean(own == reread)), "agreement_last": agree_last / len(trajs),
        "chance_last": chance, "p_last": float(binomtest(agree_last, len(trajs), min(chance, 1.0), alternative="greater").pvalue),
        "agreement_by_step": by_step,
        "per_sequence": [{"seq_id": tr["seq_id"], "grade": tr["grade"], "own": own[s:e].tolist(), "reread": reread[s:e].tolist()}
                         for tr, s, e in zip(trajs, ends - lengths, ends)],
        "images": np.split(images, ends[:-1]),
    }


def stochastic_spread(diffae, x_t: torch.Tensor, z_sem: np.ndarray, cfg: dict, steps: int, samples: int, eta: float,
                      seed: int) -> np.ndarray:
    """Pixel-wise sd (n, C, H, W) over ``samples`` DDIM decodes with noise ``eta`` of each z_sem from its x_T."""
    generator = torch.Generator().manual_seed(seed)
    n = len(z_sem)
    draws = decode_latents(diffae, x_t.repeat(samples, 1, 1, 1), np.tile(z_sem, (samples, 1)), cfg, steps, eta, generator,
                           desc="stochastic decodes")
    return draws.reshape(samples, n, *draws.shape[1:]).std(0)


def states_figure(shown: list[int], trajs: list[dict], states: dict, slices: np.ndarray, spread: np.ndarray,
                  path, title: str, grade_name: str = "grade") -> None:
    """Per shown sequence: the slices read (top), what the model believes after each (bottom: z_t decoded,
    titled with the PRM's grade and the re-encoded decode's), and at the right the central slice, the
    decode of z_sem and the sd of its stochastic decodes."""
    n = max(len(trajs[i]["row"]) for i in shown) + 3
    fig, axes = plt.subplots(2 * len(shown), n, figsize=(0.95 * n, 2.3 * len(shown)), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for s, i in enumerate(shown):
        tr, per = trajs[i], states["per_sequence"][i]
        top, bottom = axes[2 * s], axes[2 * s + 1]
        for t, row in enumerate(tr["row"]):
            show(top[t], slices[row]), top[t].set_axis_on()
            top[t].set_title(f"t={t + 1}", fontsize=7)
            show(bottom[t], states["images"][i][t]), bottom[t].set_axis_on()
            colour = "black" if per["own"][t] == per["reread"][t] else "crimson"
            bottom[t].set_title(f"{per['own'][t]} / {per['reread'][t]}", fontsize=7, color=colour)
        centre = tr["row"][len(tr["row"]) // 2]
        show(top[-2], slices[centre]), top[-2].set_axis_on()
        top[-2].set_title("central slice", fontsize=7)
        show(bottom[-2], states["images"][i][-1]), bottom[-2].set_axis_on()
        bottom[-2].set_title("z_sem decoded", fontsize=7)
        bottom[-1].imshow(spread[s].mean(0), cmap="magma", vmin=0, vmax=max(float(spread.max()), 1e-6))
        bottom[-1].set_axis_on(), bottom[-1].set_xticks([]), bottom[-1].set_yticks([])
        bottom[-1].set_title("sd, eta > 0", fontsize=7)
        top[0].set_ylabel(f"{tr['seq_id']}\n{grade_name} {tr['grade']}\nslices read", rotation=0, ha="right", va="center", fontsize=7)
        bottom[0].set_ylabel("decoded z_t\nPRM / re-read", rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(title, y=1.0, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
