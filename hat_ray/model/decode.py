"""Greedy and beam-search decoding for any Transformer (SuperTransformer + Arch, or a static
SubTransformer), with incremental (cached) decoder state.

Decoding starts from EOS as the first previous token (fairseq convention) and stops at EOS.
Beam scores are summed log-probabilities divided by ``length ** lenpen`` (length counts EOS).
"""

from __future__ import annotations

import torch
from torch import Tensor

from hat_ray.arch import Arch
from hat_ray.model.transformer import DecoderState, Transformer, reorder_encoder_out, reorder_state
from hat_ray.tokens import EOS, PAD


def _max_len(src: Tensor, max_len_a: float, max_len_b: int, limit: int) -> int:
    return max(1, min(int(max_len_a * src.shape[1] + max_len_b), limit))


@torch.inference_mode()
def greedy_decode(model: Transformer, src: Tensor, arch: Arch | None = None, max_len_a: float = 1.2,
                  max_len_b: int = 10) -> list[list[int]]:
    """Argmax decoding. src (B, S) left-padded -> one token list per sentence (no EOS)."""
    arch = model.resolve(arch)
    enc = model.encode(src, arch)
    b = src.shape[0]
    tokens = torch.full((b, 1), EOS, dtype=torch.long, device=src.device)
    done = torch.zeros(b, dtype=torch.bool, device=src.device)
    state: DecoderState = {}
    max_len = _max_len(src, max_len_a, max_len_b, model.config.max_positions - 1)
    for _ in range(max_len):
        logits = model.decode(tokens, enc, arch, state)[:, -1]
        logits[:, PAD] = float("-inf")
        nxt = logits.argmax(-1).masked_fill(done, PAD)
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        done |= nxt.eq(EOS)
        if bool(done.all()):
            break
    return [_strip(row) for row in tokens[:, 1:].tolist()]


def _strip(row: list[int]) -> list[int]:
    out = []
    for t in row:
        if t in (EOS, PAD):
            break
        out.append(t)
    return out


@torch.inference_mode()
def beam_search(model: Transformer, src: Tensor, arch: Arch | None = None, beam: int = 5,
                lenpen: float = 1.0, max_len_a: float = 1.2, max_len_b: int = 10) -> list[list[int]]:
    """Beam search; returns the best finished hypothesis per sentence (tokens without EOS)."""
    arch = model.resolve(arch)
    b, k = src.shape[0], beam
    device = src.device
    enc = reorder_encoder_out(model.encode(src, arch), torch.arange(b, device=device).repeat_interleave(k))
    tokens = torch.full((b * k, 1), EOS, dtype=torch.long, device=device)
    scores = torch.full((b, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(b)]
    state: DecoderState = {}
    max_len = _max_len(src, max_len_a, max_len_b, model.config.max_positions - 1)
    for step in range(max_len):
        lprobs = torch.log_softmax(model.decode(tokens, enc, arch, state)[:, -1].float(), dim=-1)
        lprobs[:, PAD] = float("-inf")
        if step == max_len - 1:  # force EOS at the length limit
            eos_col = lprobs[:, EOS].clone()
            lprobs.fill_(float("-inf"))
            lprobs[:, EOS] = eos_col
        vocab = lprobs.shape[1]
        cand = (scores.view(-1, 1) + lprobs).view(b, k * vocab)
        top_scores, top_idx = cand.topk(2 * k, dim=1)  # (B, 2K): enough to refill K after EOS
        new_order, new_tokens, new_scores = _select(top_scores, top_idx, vocab, k, step, lenpen,
                                                    tokens, finished)
        if all(len(f) >= k for f in finished):
            break
        order = torch.tensor(new_order, device=device)
        reorder_state(state, order)
        enc = reorder_encoder_out(enc, order)
        tokens = torch.cat([tokens.index_select(0, order), torch.tensor(new_tokens, device=device)[:, None]], 1)
        scores = torch.tensor(new_scores, device=device).view(b, k)
    return [max(f, key=lambda h: h[0])[1] if f else [] for f in finished]


def _select(top_scores: Tensor, top_idx: Tensor, vocab: int, k: int, step: int, lenpen: float,
            tokens: Tensor, finished: list[list[tuple[float, list[int]]]]) -> tuple[list[int], list[int], list[float]]:
    """Move EOS candidates to ``finished``; keep the best K live continuations per sentence."""
    order, nxt, kept = [], [], []
    for s in range(top_scores.shape[0]):
        live = 0
        for rank, (score, idx) in enumerate(zip(top_scores[s].tolist(), top_idx[s].tolist())):
            row, tok = s * k + idx // vocab, idx % vocab
            if score == float("-inf"):
                break
            if tok == EOS:
                # fairseq's rule: only an EOS among the top K candidates ends a hypothesis;
                # lower-ranked EOS candidates would fill the finished slots with poor, short ones.
                if rank < k and len(finished[s]) < k:
                    hyp = tokens[row, 1:].tolist()
                    finished[s].append((score / (step + 1) ** lenpen, hyp))
            elif live < k:
                order.append(row)
                nxt.append(tok)
                kept.append(score if len(finished[s]) < k else float("-inf"))
                live += 1
        while live < k:  # pad a sentence that ran out of candidates with dead beams
            order.append(s * k)
            nxt.append(PAD)
            kept.append(float("-inf"))
            live += 1
    return order, nxt, kept
