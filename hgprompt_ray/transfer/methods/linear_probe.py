"""Linear probe: logistic regression on the frozen backbone's features, fitted in closed form.

The classic frozen-feature baseline (VPT's "Linear" transfer type, Jia et al., ECCV 2022; the
linear evaluation protocol of Kolesnikov, Zhai, Beyer, CVPR 2019). It takes no epoch budget:
scikit-learn's L-BFGS fits it to convergence for each C of ``linear_probe.PROBE_GRID`` on
train800, C is chosen on val200, the refit on train800val200 is scored on test. Reported as a
closed-form fit, not as a run of the shared epoch budget.
"""

from __future__ import annotations

from hgprompt_ray.transfer.methods.registry import MethodKind, TransferMethod, register_method

METHOD = register_method(
    TransferMethod(
        name="linear-probe",
        label="Linear probe",
        kind=MethodKind.TUNING,
        paper="linear evaluation on frozen features (Kolesnikov et al., CVPR 2019; VPT's 'Linear', ECCV 2022)",
        trains=(),
        trains_text="logistic regression on frozen CLS features (closed form, C on val200)",
        reads=("train800", "val200"),
        closed_form=True,
        order=10,
    )
)
