"""The engine gives its scheduler the decoded output text (``Scheduler(output_text=...)``), so
a turn whose client named no tool has the tool parsed from what the model wrote."""
from continuum.config import EngineArgs
from continuum.engine.engine import LLMEngine
from continuum.request import AgentInfo, Request
from continuum.sampling_params import SamplingParams


def test_engine_decodes_the_output_for_the_tool_parser():
    eng = LLMEngine(EngineArgs.from_kwargs(model="random:tiny", dtype="float32", device="cpu",
                                           kv_cache_memory="1MiB", scheduling_policy="continuum"))
    req = Request("r", [1, 2, 3], SamplingParams(), 0.0, agent=AgentInfo("p", 0, False, None))
    for t in eng.tokenizer.encode("I will look.\n```bash\nls -la src\n```", add_special_tokens=False):
        req.append_output_token(t)
    assert eng.scheduler.agents.resolve_tool(req) == "ls"
    req.agent = AgentInfo("p", 0, False, "grep")          # a client-given name wins
    assert eng.scheduler.agents.resolve_tool(req) == "grep"
