"""Deployment: a static SubTransformer as an encoder graph and an incremental decoder-step graph
(ONNX or TorchScript, fp32 or int8), and a runner that decodes with them."""
