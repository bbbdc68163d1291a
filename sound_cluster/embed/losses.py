"""The training losses of the encoder, in ``keras.ops`` (any Keras backend).

The clustering loss of Jansen et al. (ICASSP 2020), ``mean_i H(p_i) - gamma * H(mean_i p_i)``,
wants each example confident and the batch to use every cluster (:func:`entropy_terms` gives
both terms); NT-Xent (SimCLR) pulls two views of one example together. Each crop is one example:
its posterior is the mean over the steps that hold its file (:func:`step_mask`,
:func:`masked_mean_log_posterior`), as a file's is at inference.
"""

from __future__ import annotations

from typing import Any

from keras import ops

from sound_cluster.embed.crops import END, START


def entropy_terms(logits) -> tuple[Any, Any]:
    """Mean per-example entropy and entropy of the mean posterior, in nats, from logits.

    Parameters
    ----------
    logits : tensor [shape=(..., K)]
        Every leading index is one example.

    Returns
    -------
    h_cond : scalar tensor
        ``mean_i H(p_i)``.
    h_marg : scalar tensor
        ``H(mean_i p_i)``; ``log(mean_i p_i)`` is computed as a log-sum-exp, so it stays finite
        even where a cluster gets no mass at all.
    """
    k = ops.shape(logits)[-1]
    logp = ops.log_softmax(ops.reshape(logits, (-1, k)), axis=-1)  # (N, K)
    p = ops.exp(logp)
    h_cond = -ops.mean(ops.sum(p * logp, axis=-1))
    n = ops.cast(ops.shape(logp)[0], logp.dtype)
    log_pbar = ops.logsumexp(logp, axis=0) - ops.log(n)  # (K,)
    h_marg = -ops.sum(ops.exp(log_pbar) * log_pbar)
    return h_cond, h_marg


def nt_xent(z, files, *, temperature: float):
    """SimCLR's NT-Xent loss for view pairs, in nats.

    Parameters
    ----------
    z : tensor [shape=(2B, D)]
        Rows ``i`` and ``B + i`` are the two views of one example.
    files : tensor [shape=(2B,)]
        Each row's source file, or group of files; rows of one file or group other than the
        partner are not negatives.
    temperature : float
        Scale of the cosine similarities.
    """
    n = ops.shape(z)[0]
    b = n // 2
    z = z / (ops.norm(z, axis=-1, keepdims=True) + 1e-6)
    sim = ops.matmul(z, ops.transpose(z)) / temperature  # (2B, 2B)
    idx = ops.arange(n)
    partner = ops.concatenate([idx[b:], idx[:b]])
    files = ops.reshape(files, (-1,))
    same_file = ops.equal(files[:, None], files[None, :])
    is_partner = ops.equal(idx[None, :], partner[:, None])
    excluded = ops.logical_and(same_file, ops.logical_not(is_partner))  # self and other crops of the file
    sim = ops.where(excluded, ops.full_like(sim, -1e9), sim)
    pos = ops.take_along_axis(sim, partner[:, None], axis=1)[:, 0]
    return ops.mean(ops.logsumexp(sim, axis=1) - pos)


def step_mask(info, *, steps, time_pool: int):
    """Which output steps of each crop hold its file's own audio.

    Parameters
    ----------
    info : tensor [shape=(N, 3)]
        Per crop: group, first and one-past-last frame of the file's audio (see
        :meth:`sound_cluster.embed.crops.CropSampler.batch_with_files`).
    steps : int
        Output steps per crop, ``ceil(crop_frames / time_pool)``.
    time_pool : int
        Input frames per output step.

    Returns
    -------
    tensor [shape=(N, steps), dtype=float32]
        1 where the step's frames overlap the file's audio, else 0.
    """
    first = ops.arange(steps) * time_pool  # (T',) first frame of each step
    start = ops.cast(info[:, START], first.dtype)[:, None]
    end = ops.cast(info[:, END], first.dtype)[:, None]
    inside = ops.logical_and(first[None, :] < end, first[None, :] + time_pool > start)
    return ops.cast(inside, "float32")


def masked_mean_log_posterior(logp, mask):
    """Log of each crop's mean posterior over its own steps.

    Parameters
    ----------
    logp : tensor [shape=(N, T', K)]
        Log posteriors of every step.
    mask : tensor [shape=(N, T')]
        :func:`step_mask`: 1 for the steps that hold the crop's file.

    Returns
    -------
    tensor [shape=(N, K)]
        ``log mean_t p_t`` over the masked steps; already normalised.
    """
    log_mask = ops.where(mask > 0, ops.zeros_like(mask), ops.full_like(mask, -1e9))[:, :, None]
    return ops.logsumexp(logp + ops.cast(log_mask, logp.dtype), axis=1) \
        - ops.log(ops.cast(ops.sum(mask, axis=1, keepdims=True), logp.dtype))

