"""The surfaces over the agent: the ``sam3agent`` command line (:mod:`.cli`), the MCP and HTTP servers
(:mod:`.serve`), the chat-assistant tool (:mod:`.embed`), ``doctor`` (:mod:`.doctor`) and ``selftest``
(:mod:`.selftest`).

They sit above the agent core (``sam3agent.*``), the evals (``evals``), the LLM backends
(``sam3agent.llm``) and the engine (``sam3core``), and nothing below imports them
(``tests/test_architecture.py`` checks it).
"""
