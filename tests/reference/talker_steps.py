"""The official talker run as our tests and device references drive ours: one prefill of a padded
batch, then single-position steps, with the positions and masks the reference's generation builds.

One copy of that loop (it was written out in five places): `reference_talker_hidden` returns the
official `Qwen3TTSTalkerModel`'s hidden states, and callers apply `talker.codec_head` where they
compare logits.
"""

from __future__ import annotations

import numpy as np


def reference_talker_hidden(ref, x: np.ndarray, mask: np.ndarray, steps) -> list:
    """Hidden states (torch tensors) of `ref.talker.model`: the prefill's `(b, t, d)` over embeddings
    `x` with left-padding `mask` `(b, t)`, then each step's `(b, 1, d)` over `steps[i]` `(b, 1, d)`.

    Prefill positions are what the reference's `get_rope_index` builds (cumsum(mask) - 1, pads at
    1); step positions continue from each row's real-token count (its `rope_deltas`)."""
    import torch

    with torch.no_grad():
        am = torch.tensor(mask).long()
        pos0 = (am.cumsum(-1) - 1).masked_fill(am == 0, 1)
        out = ref.talker.model(
            inputs_embeds=torch.tensor(x), attention_mask=am, use_cache=True, position_ids=pos0[None].expand(3, -1, -1)
        )
        hidden, past = [out.last_hidden_state], out.past_key_values
        pos = torch.tensor(mask.sum(1))[:, None]
        for i, e in enumerate(steps):
            am = torch.cat([am, torch.ones(am.shape[0], 1, dtype=am.dtype)], 1)
            r = ref.talker.model(
                inputs_embeds=torch.tensor(e),
                attention_mask=am,
                past_key_values=past,
                use_cache=True,
                position_ids=(pos + i)[None].expand(3, -1, -1),
            )
            hidden.append(r.last_hidden_state)
            past = r.past_key_values
    return hidden


def reference_talker_logits(ref, hidden: list) -> list[np.ndarray]:
    """`ref.talker.codec_head` over `reference_talker_hidden`'s states, as numpy."""
    import torch

    with torch.no_grad():
        return [ref.talker.codec_head(h).numpy() for h in hidden]
