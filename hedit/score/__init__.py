"""Scoring, shared by find and measure: rule judges (``judge``, ``compliance``), the LLM judge
(``llm_judge``), behaviour suites (``suites``), capability checks under the intervention
(``capability``) and statistics (``stats``)."""
