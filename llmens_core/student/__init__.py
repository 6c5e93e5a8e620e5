"""A student per attribute: a cheap text classifier learnt online from the ensemble's decisions (issue 33).

:mod:`.text` turns a product's own text into hashed features and says how familiar it is; :mod:`.classifier`
holds one attribute's student (``SGDClassifier`` log-loss, prequential record, versioned bytes);
:mod:`.measure` the record and the rule that licenses it to vote; :mod:`.panel` every attribute's students,
their exploration share and their votes. Knows nothing of Kafka: the stream and the benchmark wire it in; the
adaptive policy asks it first (:func:`llmens_core.adaptive.ask_student_first`).
"""

from llmens_core.student.classifier import FORMAT, AttributeStudent, Guess
from llmens_core.student.measure import TAUS, PrequentialRecord, wilson_lower
from llmens_core.student.panel import STUDENT, Students, hash_share
from llmens_core.student.text import BUCKETS, TextFeatures, product_text

__all__ = ["BUCKETS", "FORMAT", "STUDENT", "TAUS", "AttributeStudent", "Guess", "PrequentialRecord", "Students",
           "TextFeatures", "hash_share", "product_text", "wilson_lower"]
