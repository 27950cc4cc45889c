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
correct = int((model.predict(model.preprocess(x)).argmax(1) == y).sum())
print(json.dumps({"correct": correct, "n": len(y), "quantization": model.quantization, "tf": "tensorflow" in sys.modules}))
"""


def test_reference_int8_model_runs_with_the_runtime_alone_at_its_measured_accuracy(tmp_path, digits):
    import numpy as np

    raw = tmp_path / "digits_test.npz"
    # the runtime scales raw pixels itself (digits: 0..16) from the sidecar, as on the device
    np.savez(raw, x=np.rint(digits.x_test / digits.scaling.scale), y=digits.y_test)
    out = subprocess.run([sys.executable, "-c", EDGE_SCRIPT, str(REFERENCE), str(raw)], check=True,
                         capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    # the committed file on a deterministic interpreter: exactly the README's 98.00 % (441 of 450), no slack
    assert result == {"correct": 441, "n": 450, "quantization": "int8", "tf": False}
