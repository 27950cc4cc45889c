"""The committed digits pipeline result, loaded as an edge device would: the runtime alone."""

import json
import subprocess
import sys
from pathlib import Path

REFERENCE = Path(__file__).resolve().parents[1] / "tflite_models" / "digits_qat_int8.tflite"

EDGE_SCRIPT = """
import json, sys
import numpy as np
from kerascomp import runtime
model = runtime.load(sys.argv[1])
x, y = np.load(sys.argv[2])["x"], np.load(sys.argv[2])["y"]
accuracy = float((model.predict(model.preprocess(x)).argmax(1) == y).mean())
print(json.dumps({"accuracy": accuracy, "quantization": model.quantization, "tf": "tensorflow" in sys.modules}))
"""


def test_reference_int8_model_runs_with_the_runtime_alone_at_its_measured_accuracy(tmp_path, digits):
    import numpy as np

    raw = tmp_path / "digits_test.npz"
    # the runtime scales raw pixels itself (digits: 0..16) from the sidecar, as on the device
    np.savez(raw, x=np.rint(digits.x_test / digits.scaling.scale), y=digits.y_test)
    out = subprocess.run([sys.executable, "-c", EDGE_SCRIPT, str(REFERENCE), str(raw)], check=True,
                         capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result == {"accuracy": result["accuracy"], "quantization": "int8", "tf": False}
    assert result["accuracy"] >= 0.97
