"""Forget penalty: fine-tune on the retain set while pushing the predictions on the forget set towards
the uniform distribution. An example of an unlearning method in a file of one's own (docs/own-method.md):
the pipeline runs it, its "+da" variant, its tuning, metrics, tables and audit like a built-in method.

Per step: CE on a retain batch (``ctx.fit``) + beta * CE(uniform, p(x_f)) on a forget batch drawn from
the forget set (``ctx.sample``), whose minimum beta * log C is reached where the model predicts every
class with equal probability on the forget samples.
"""

import torch.nn.functional as F

API_VERSION = 1  # the method API this file is written for (docs/method-api.md)
DESCRIPTION = "Forget penalty: CE on D_r + beta * CE(uniform, p(x_f)) on a sampled forget batch"
# the JSON schema of its block unlearn.forget_penalty: the optimiser keys every method has, and beta
HYPERPARAMETERS = {
    "$ref": "#/$defs/optim",
    "properties": {
        "beta": {"type": "number", "minimum": 0, "maximum": 100, "description": "weight of the forget penalty"},
        "forget_batch_size": {"type": "integer", "minimum": 2, "maximum": 65536,
                              "description": "forget samples drawn per step"},
    },
    "required": ["beta", "forget_batch_size"],
    "unevaluatedProperties": False,
}


def run(ctx, hp):
    """Change ``ctx.model`` in place; ``hp`` is the validated ``unlearn.forget_penalty`` block."""
    beta, forget_batch = float(hp["beta"]), int(hp["forget_batch_size"])

    def loss(logits, labels, model):
        ce = F.cross_entropy(logits, labels)
        x_forget, _ = ctx.sample("forget", forget_batch)
        to_uniform = -F.log_softmax(model(x_forget).float(), dim=1).mean()
        return ce + beta * to_uniform, {"ce": ce, "to_uniform": to_uniform}

    ctx.fit("retain", hp, loss)  # epochs over D_r; as forget_penalty+da each batch also carries the DA term


def images(count):
    """What one job pushes through the model (``make bench``, the CIFAR cost): ``ctx.fit``'s passes over
    the retain set, and one forget batch beside each of its steps (tests/test_own_method.py checks it
    against the images a job records)."""
    passes, steps = count.fit("retain")
    return passes + count.forward_backward(steps * min(int(count.hp["forget_batch_size"]), count.n_forget)), steps
