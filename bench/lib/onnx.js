'use strict';
// ONNX models of exact attention for the onnxruntime-node comparison, written
// with the small protobuf writer (field numbers from onnx.proto):
//   matmul: MatMul(Q, Transpose(K)) * scale [+ causal mask] -> Softmax -> MatMul(., V),
//           inputs [B, H, L, d] like this library's;
//   mha:    com.microsoft MultiHeadAttention (onnxruntime's fused CPU kernel),
//           inputs [B, L, H*d], output [B, L, H*Dv]; causal through unidirectional = 1.
const { ProtoWriter } = require('./protobuf');

const FLOAT = 1; // TensorProto.DataType
const ATTR = { FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, INTS: 7 }; // AttributeProto.AttributeType
const IR_VERSION = 8;
const OPSET = 17;

function valueInfo(w, field, name, dims) {
  w.message(field, (vi) => {
    vi.string(1, name);
    vi.message(2, (type) =>
      type.message(1, (tensor) => {
        tensor.int(1, FLOAT);
        tensor.message(2, (shape) => {
          for (const d of dims) shape.message(1, (dim) => (typeof d === 'string' ? dim.string(2, d) : dim.int(1, d)));
        });
      }),
    );
  });
}

function attribute(w, name, value) {
  w.message(5, (a) => {
    a.string(1, name);
    if (Array.isArray(value)) {
      a.int(20, ATTR.INTS);
      for (const v of value) a.int(8, v);
    } else if (typeof value === 'object' && value.float !== undefined) {
      a.int(20, ATTR.FLOAT);
      a.float(2, value.float);
    } else if (Number.isInteger(value)) {
      a.int(20, ATTR.INT);
      a.int(3, value);
    } else {
      throw new TypeError(`attribute ${name}: unsupported value ${value}`);
    }
  });
}

function node(w, { op, inputs, outputs, name, domain, attributes = {} }) {
  w.message(1, (n) => {
    for (const i of inputs) n.string(1, i);
    for (const o of outputs) n.string(2, o);
    n.string(3, name ?? `${op}_${outputs[0]}`);
    n.string(4, op);
    if (domain) n.string(7, domain);
    for (const [k, v] of Object.entries(attributes)) attribute(n, k, v);
  });
}

function initializer(w, name, dims, data) {
  w.message(5, (t) => {
    for (const d of dims) t.int(1, d);
    t.int(2, FLOAT);
    t.string(8, name);
    t.bytes(9, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  });
}

/** A ModelProto: graph(g) fills the GraphProto; opsets: [[domain, version]]. */
function model(graphName, opsets, graph) {
  const w = new ProtoWriter();
  w.int(1, IR_VERSION);
  w.string(2, 'performer-attention bench');
  for (const [domain, version] of opsets) {
    w.message(8, (o) => {
      if (domain) o.string(1, domain);
      o.int(2, version);
    });
  }
  w.message(7, (g) => {
    g.string(2, graphName);
    graph(g);
  });
  return w.finish();
}

/** MatMul - Softmax - MatMul attention over [B, H, L, d] inputs. */
function matmulSoftmaxModel({ batch, heads, L, headDim, valueDim = headDim, causal = false, scale }) {
  const s = scale ?? 1 / Math.sqrt(headDim);
  return model('attention_matmul_softmax', [['', OPSET]], (g) => {
    node(g, { op: 'Transpose', inputs: ['key'], outputs: ['key_t'], attributes: { perm: [0, 1, 3, 2] } });
    node(g, { op: 'MatMul', inputs: ['query', 'key_t'], outputs: ['scores'] });
    node(g, { op: 'Mul', inputs: ['scores', 'scale'], outputs: ['scaled'] });
    let logits = 'scaled';
    if (causal) {
      node(g, { op: 'Add', inputs: ['scaled', 'causal_mask'], outputs: ['masked'] });
      logits = 'masked';
    }
    node(g, { op: 'Softmax', inputs: [logits], outputs: ['probs'], attributes: { axis: -1 } });
    node(g, { op: 'MatMul', inputs: ['probs', 'value'], outputs: ['output'] });
    initializer(g, 'scale', [], Float32Array.of(s));
    if (causal) {
      // Additive mask [L, L]: -inf above the diagonal (key j > query i).
      const mask = new Float32Array(L * L);
      for (let i = 0; i < L; i++) mask.fill(-Infinity, i * L + i + 1, (i + 1) * L);
      initializer(g, 'causal_mask', [L, L], mask);
    }
    valueInfo(g, 11, 'query', [batch, heads, L, headDim]);
    valueInfo(g, 11, 'key', [batch, heads, L, headDim]);
    valueInfo(g, 11, 'value', [batch, heads, L, valueDim]);
    valueInfo(g, 12, 'output', [batch, heads, L, valueDim]);
  });
}

/** com.microsoft MultiHeadAttention over [B, L, H*d] inputs. */
function multiHeadAttentionModel({ batch, heads, L, headDim, valueDim = headDim, causal = false, scale }) {
  return model('attention_mha', [['', OPSET], ['com.microsoft', 1]], (g) => {
    const attributes = { num_heads: heads };
    if (scale !== undefined) attributes.scale = { float: scale };
    if (causal) attributes.unidirectional = 1;
    node(g, {
      op: 'MultiHeadAttention',
      domain: 'com.microsoft',
      inputs: ['query', 'key', 'value'],
      outputs: ['output'],
      attributes,
    });
    valueInfo(g, 11, 'query', [batch, L, heads * headDim]);
    valueInfo(g, 11, 'key', [batch, L, heads * headDim]);
    valueInfo(g, 11, 'value', [batch, L, heads * valueDim]);
    valueInfo(g, 12, 'output', [batch, L, heads * valueDim]);
  });
}

module.exports = { matmulSoftmaxModel, multiHeadAttentionModel };
