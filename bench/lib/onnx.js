'use strict';
// ONNX models of exact attention for the onnxruntime-node comparison, encoded
// with protobufjs from the message definitions in onnx.proto:
//   matmul: MatMul(Q, Transpose(K)) * scale [+ causal mask] -> Softmax -> MatMul(., V),
//           inputs [B, H, L, d] like this library's;
//   mha:    com.microsoft MultiHeadAttention (onnxruntime's fused CPU kernel),
//           inputs [B, L, H*d], output [B, L, H*Dv]; causal through unidirectional = 1.
const path = require('node:path');
const { requireOptional } = require('./optional');

const IR_VERSION = 8;
const OPSET = 17;

let types = null;

/** The ONNX message types and enums, parsed once from onnx.proto. */
function onnxTypes() {
  if (!types) {
    const protobuf = requireOptional('protobufjs');
    const root = new protobuf.Root().loadSync(path.join(__dirname, 'onnx.proto'), { keepCase: true });
    types = {
      ModelProto: root.lookupType('onnx.ModelProto'),
      AttributeProto: root.lookupType('onnx.AttributeProto'),
      ATTR: root.lookupEnum('onnx.AttributeProto.AttributeType').values,
      FLOAT: root.lookupEnum('onnx.TensorProto.DataType').values.FLOAT,
    };
  }
  return types;
}

function valueInfo(name, dims) {
  const dim = dims.map((d) => (typeof d === 'string' ? { dim_param: d } : { dim_value: d }));
  return { name, type: { tensor_type: { elem_type: onnxTypes().FLOAT, shape: { dim } } } };
}

function attribute(name, value) {
  const { ATTR } = onnxTypes();
  if (Array.isArray(value)) return { name, ints: value, type: ATTR.INTS };
  if (typeof value === 'object' && value.float !== undefined) return { name, f: value.float, type: ATTR.FLOAT };
  if (Number.isInteger(value)) return { name, i: value, type: ATTR.INT };
  throw new TypeError(`attribute ${name}: unsupported value ${value}`);
}

function node({ op, inputs, outputs, name, domain, attributes = {} }) {
  return {
    input: inputs,
    output: outputs,
    name: name ?? `${op}_${outputs[0]}`,
    op_type: op,
    ...(domain ? { domain } : {}),
    attribute: Object.entries(attributes).map(([k, v]) => attribute(k, v)),
  };
}

function initializer(name, dims, data) {
  return { dims, data_type: onnxTypes().FLOAT, name, raw_data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}

/** Encodes a ModelProto around graph (a GraphProto object); opsets: [[domain, version]]. */
function model(graph, opsets) {
  const { ModelProto } = onnxTypes();
  const message = {
    ir_version: IR_VERSION,
    producer_name: 'performer-attention bench',
    graph,
    // The default domain is left unset, as ONNX writers do.
    opset_import: opsets.map(([domain, version]) => (domain ? { domain, version } : { version })),
  };
  const problem = ModelProto.verify(message);
  if (problem) throw new TypeError(`ONNX model: ${problem}`);
  return ModelProto.encode(message).finish();
}

/** A model's bytes decoded to plain objects (int64 as BigInt): for tests and checks. */
function decodeModel(bytes) {
  const { ModelProto } = onnxTypes();
  return ModelProto.toObject(ModelProto.decode(bytes), { longs: BigInt, enums: String });
}

/** MatMul - Softmax - MatMul attention over [B, H, L, d] inputs. */
function matmulSoftmaxModel({ batch, heads, L, headDim, valueDim = headDim, causal = false, scale }) {
  const s = scale ?? 1 / Math.sqrt(headDim);
  const logits = causal ? 'masked' : 'scaled';
  const nodes = [
    node({ op: 'Transpose', inputs: ['key'], outputs: ['key_t'], attributes: { perm: [0, 1, 3, 2] } }),
    node({ op: 'MatMul', inputs: ['query', 'key_t'], outputs: ['scores'] }),
    node({ op: 'Mul', inputs: ['scores', 'scale'], outputs: ['scaled'] }),
    ...(causal ? [node({ op: 'Add', inputs: ['scaled', 'causal_mask'], outputs: ['masked'] })] : []),
    node({ op: 'Softmax', inputs: [logits], outputs: ['probs'], attributes: { axis: -1 } }),
    node({ op: 'MatMul', inputs: ['probs', 'value'], outputs: ['output'] }),
  ];
  const initializers = [initializer('scale', [], Float32Array.of(s))];
  if (causal) {
    // Additive mask [L, L]: -inf above the diagonal (key j > query i).
    const mask = new Float32Array(L * L);
    for (let i = 0; i < L; i++) mask.fill(-Infinity, i * L + i + 1, (i + 1) * L);
    initializers.push(initializer('causal_mask', [L, L], mask));
  }
  const graph = {
    node: nodes,
    name: 'attention_matmul_softmax',
    initializer: initializers,
    input: [
      valueInfo('query', [batch, heads, L, headDim]),
      valueInfo('key', [batch, heads, L, headDim]),
      valueInfo('value', [batch, heads, L, valueDim]),
    ],
    output: [valueInfo('output', [batch, heads, L, valueDim])],
  };
  return model(graph, [['', OPSET]]);
}

/** com.microsoft MultiHeadAttention over [B, L, H*d] inputs. */
function multiHeadAttentionModel({ batch, heads, L, headDim, valueDim = headDim, causal = false, scale }) {
  const attributes = { num_heads: heads };
  if (scale !== undefined) attributes.scale = { float: scale };
  if (causal) attributes.unidirectional = 1;
  const graph = {
    node: [
      node({
        op: 'MultiHeadAttention',
        domain: 'com.microsoft',
        inputs: ['query', 'key', 'value'],
        outputs: ['output'],
        attributes,
      }),
    ],
    name: 'attention_mha',
    input: [
      valueInfo('query', [batch, L, heads * headDim]),
      valueInfo('key', [batch, L, heads * headDim]),
      valueInfo('value', [batch, L, heads * valueDim]),
    ],
    output: [valueInfo('output', [batch, L, heads * valueDim])],
  };
  return model(graph, [['', OPSET], ['com.microsoft', 1]]);
}

module.exports = { matmulSoftmaxModel, multiHeadAttentionModel, decodeModel, onnxTypes };
