//! One autodiff node per fused call; its backward calls the inner backend's hand-written gradient.

use super::FusedOps;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::tensor::ops::ConvOptions;

#[derive(Debug)]
struct GroupNormBackward;

/// x, γ, β, mean, rstd, the backend's saved pre-activation, groups, silu. Stored rather than
/// checkpointed: the statistics exist only here, and x is kept alive by the convolution that
/// reads the output anyway.
type GroupNormState<B> = (
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    Option<FloatTensor<B>>,
    usize,
    bool,
);

impl<B: FusedOps> Backward<B, 3> for GroupNormBackward {
    type State = GroupNormState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (x, gamma, beta, mean, rstd, z, groups, silu) = ops.state;
        // Where the forward kept the pre-activation z, SiLU's gradient is applied here and the
        // backend's GroupNorm backward runs without it.
        let (dy, silu) = match z {
            Some(z) if silu => (B::fused_silu_backward(z, dy), false),
            _ => (dy, silu),
        };
        let (dx, dgamma, dbeta) =
            B::group_norm_backward(dy, x, gamma, beta, mean, rstd, groups, silu);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = node_gamma {
            grads.register::<B>(node.id, dgamma);
        }
        if let Some(node) = node_beta {
            grads.register::<B>(node.id, dbeta);
        }
    }
}

/// A one-input node whose gradient is `grad(state, dy)`: SiLU (the state is its input z) and
/// softmax (the state is its output y).
#[derive(Debug)]
struct UnaryBackward<B: FusedOps> {
    grad: fn(FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>,
}

impl<B: FusedOps> Backward<B, 1> for UnaryBackward<B> {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        if let Some(node) = node {
            grads.register::<B>(node.id, (self.grad)(ops.state, dy));
        }
    }
}

#[derive(Debug)]
struct Conv2dBackward;

/// x, weight, options. Stored directly; burn's own conv node checkpoints them, which under the
/// default (no recomputation) strategy keeps the same tensors alive.
type Conv2dState<B> = (FloatTensor<B>, FloatTensor<B>, ConvOptions<2>);

impl<B: FusedOps> Backward<B, 3> for Conv2dBackward {
    type State = Conv2dState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_weight, node_bias] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (x, weight, options) = ops.state;
        let needed = [node_x.is_some(), node_weight.is_some(), node_bias.is_some()];
        let (dx, dw, db) = B::conv2d_backward(x, weight, dy, options, needed);
        for (node, grad) in [(node_x, dx), (node_weight, dw), (node_bias, db)] {
            if let (Some(node), Some(grad)) = (node, grad) {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

impl<B: FusedOps, C: CheckpointStrategy> FusedOps for Autodiff<B, C> {
    fn fused_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        let (x, x_node) = x.into_parts();
        let (weight, weight_node) = weight.into_parts();
        let (bias, bias_node) = bias.into_parts();
        match Conv2dBackward
            .prepare::<C>([x_node, weight_node, bias_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::fused_conv2d(x.clone(), weight.clone(), bias, options.clone());
                prep.finish((x, weight, options), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_conv2d(x, weight, bias, options)),
        }
    }

    fn group_norm_silu(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        eps: f64,
        silu: bool,
    ) -> FloatTensor<Self> {
        let (x, x_node) = x.into_parts();
        let (gamma, gamma_node) = gamma.into_parts();
        let (beta, beta_node) = beta.into_parts();
        match GroupNormBackward
            .prepare::<C>([x_node, gamma_node, beta_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (y, mean, rstd, z) = B::group_norm_forward(
                    x.clone(),
                    gamma.clone(),
                    beta.clone(),
                    groups,
                    eps,
                    silu,
                );
                prep.finish((x, gamma, beta, mean, rstd, z, groups, silu), y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::group_norm_silu(x, gamma, beta, groups, eps, silu))
            }
        }
    }

    fn fused_softmax(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let (x, node) = x.into_parts();
        let node_kind = UnaryBackward::<B> {
            grad: B::fused_softmax_backward,
        };
        match node_kind.prepare::<C>([node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = B::fused_softmax(x);
                prep.finish(y.clone(), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_softmax(x)),
        }
    }

    fn fused_silu(z: FloatTensor<Self>) -> FloatTensor<Self> {
        let (z, node) = z.into_parts();
        let node_kind = UnaryBackward::<B> {
            grad: B::fused_silu_backward,
        };
        match node_kind.prepare::<C>([node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = B::fused_silu(z.clone());
                prep.finish(z, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_silu(z)),
        }
    }
}
