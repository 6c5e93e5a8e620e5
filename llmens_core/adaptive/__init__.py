"""Cost-aware adaptive querying (issue 7): ask LLMs in stages until asking the rest could not pay off.

:mod:`.policy` holds the plan and the stopping rule (:class:`AdaptivePolicy`, :func:`ask_in_stages`),
:mod:`.value` the value-of-information maths (:func:`informativeness`, :func:`expected_gain`), which reads
only the online model's public parameters snapshot (``OnlineDawidSkene.params()``). The design and the
measurements behind the defaults: ``docs/adaptive.md``. :mod:`.cascade` asks the student
(:mod:`llmens_core.student`) first and the LLMs only for what its votes leave unsettled (issue 33); :mod:`.prior`
fits the prior a rare attribute's model starts from, shared across attributes.
"""

from llmens_core.adaptive.cascade import ask_student_first, decided_alone, learnable, teaching
from llmens_core.adaptive.policy import REASONS, AdaptivePolicy, ask_in_stages
from llmens_core.adaptive.prior import shared_criterion, shared_priors
from llmens_core.adaptive.value import expected_gain, informativeness

__all__ = ["AdaptivePolicy", "REASONS", "ask_in_stages", "ask_student_first", "decided_alone", "expected_gain",
           "informativeness", "learnable", "shared_criterion", "shared_priors", "teaching"]
