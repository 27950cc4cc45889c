"""Every post-training quantization mode and backend by name: one home, importable without TensorFlow.

The CLI's choices, the pipeline's checks and the exporters all read these.
A mode keeps its name everywhere (the sidecar's and bench's ``quantization``
field included); only artifact names and pipeline stage lists call the
unquantized mode ``fp32`` (:data:`LABELS`), read both ways from here.
"""

CONVERTER_MODES = ("none", "float16", "dynamic", "int8", "int16x8")  # TFLiteConverter's own post-training modes
RECIPES = {  # kerascomp mode -> LiteRT Quantizer recipe
    "dynamic": "dynamic_wi8_afp32",
    "dynamic-int4": "dynamic_wi4_afp32",
    "int8": "static_wi8_ai8",
    "int16x8": "static_wi8_ai16",
    "int8-weights": "weight_only_wi8_afp32",
    "int4-weights": "weight_only_wi4_afp32",
}
QUANTIZE_MODES = CONVERTER_MODES + tuple(mode for mode in RECIPES if mode not in CONVERTER_MODES)
CALIBRATED_MODES = ("int8", "int16x8")  # activations quantized too: ranges come from training inputs
BACKENDS = ("converter", "litert-quantizer")
DEFAULT_BACKEND = "converter"
KEEP_FLOAT_AUTO = "auto"  # keep in float the ops that would leave XNNPACK in integer form
LABELS = {mode: "fp32" if mode == "none" else mode for mode in QUANTIZE_MODES}  # mode -> its name in file names
MODES_BY_LABEL = {label: mode for mode, label in LABELS.items()}  # a pipeline stage's ``quantize:`` entry -> mode
