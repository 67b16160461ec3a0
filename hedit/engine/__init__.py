"""The shared engine layer under find, measure and check: prompt building (``prompts``), hedit's one
decoder (``decoder``), the runtime intervention hooks (``intervention``), one vLLM client and its server
(``vllm``, ``vllm_server``), and engine choice, made once per command (``choice``)."""
