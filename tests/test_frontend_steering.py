"""The frontend's steering labels and sliders, run in node on the shipped modules: the blame
legend names a term in the backend's spelling (``{"source": "caa:concise"}``, never "undefined"),
and the agent panel's recommended range is the one the backend serves, never one of its own."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from agents.personas import SHIPPED
from inference.steering import CAA_GUIDES

from _jshelpers import node_or_skip

pytestmark = pytest.mark.node

FRONTEND = Path(__file__).resolve().parent.parent / "frontend"


def run_js(code: str) -> object:
    node = node_or_skip()
    out = subprocess.run([node, "--input-type=module", "-e", code], cwd=FRONTEND, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_blame_legend_names_backend_terms():
    terms = SHIPPED[0].steering  # what a run's token meta carries: the spec spelling
    texts = run_js(f"""
        import {{ steeringText, authorText }} from './src/review/common.js'
        const terms = {json.dumps(terms)}
        console.log(JSON.stringify([steeringText(terms), authorText({{ author_name: 'Editor', kind: 'agent', steering: terms }}),
          steeringText([{{ id: 'formal', strength: -0.2 }}]), steeringText([{{ strength: 0.1 }}])]))""")
    assert texts == [f"concise +{terms[0]['strength']}", f"Editor (agent, steering: concise +{terms[0]['strength']})",
                     "formal -0.2", "steering +0.1"]


def test_panel_sliders_take_the_backend_range():
    served = SHIPPED[0].to_json()["steering"][0]  # as GET /api/agents serves it
    items = run_js(f"""
        import {{ steeringItem }} from './src/agents.js'
        console.log(JSON.stringify([steeringItem({json.dumps(served)}), steeringItem({{ id: 'mystery', kind: 'vector' }})]))""")
    guide = CAA_GUIDES["concise"]
    assert items[0]["recommended"] == [guide.low, guide.high] == served["recommended"]
    assert items[0]["strength"] == guide.default  # the shipped persona is calibrated, inside its range
    assert guide.low <= guide.default <= guide.high
    assert items[1]["recommended"] is None  # nothing served: no band, no warning made up by the panel
