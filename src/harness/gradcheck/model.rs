//! The models' losses: the MLP's Hessian-vector product by double
//! backward, and the CNN's gradient and double backward.

use crate::meta::model::Arch;
use crate::meta::rng::SplitMix;
use crate::meta::tape::{Tape, Var};
use crate::meta::tensor::Tensor;

use super::{directional, grad_error, random, rel_err, Check, EPS};

/// Double-backward Hessian-vector product of an MLP's loss (ReLU and tanh)
/// in its weights against central differences of its gradient.
pub fn check_hvp(seed: u64) -> Vec<Check> {
    use crate::meta::mlp::{Activation, Mlp};
    let mut out = Vec::new();
    for act in [Activation::Tanh, Activation::Relu] {
        let mut rng = SplitMix::new(seed);
        let model = Mlp::<f64>::new(&[6, 8, 4], act, seed);
        let x = random(&mut rng, &[5, 6], -1.0, 1.0);
        let labels = [0, 3, 1, 2, 1];
        let v: Vec<Tensor<f64>> = model
            .params
            .iter()
            .map(|p| random(&mut rng, p.shape(), -1.0, 1.0))
            .collect();
        // analytic: ∇⟨∇L, v⟩
        let mut tape = Tape::new();
        let ws: Vec<Var> = model.params.iter().map(|p| tape.param(p.clone())).collect();
        let xv = tape.constant(x.clone());
        let loss = Arch::Mlp(act).loss(&mut tape, &ws, xv, &labels);
        let g = tape.grad(loss, &ws, true);
        let mut gv = None;
        for (gi, vi) in g.iter().zip(&v) {
            let c = tape.constant(vi.clone());
            let d = tape.dot(*gi, c);
            gv = Some(match gv {
                Some(t) => tape.add(t, d),
                None => d,
            });
        }
        let hv = tape.grad(gv.expect("layers"), &ws, false);
        let hv: Vec<f64> = hv
            .iter()
            .flat_map(|h| tape.value(*h).data().to_vec())
            .collect();
        // numeric: (∇L(w+εv) − ∇L(w−εv)) / 2ε
        let grad_at = |e: f64| {
            let mut m = model.clone();
            for (p, vi) in m.params.iter_mut().zip(&v) {
                p.axpy(e, vi);
            }
            crate::meta::model::loss_and_grads(&m.params, &x, &labels, &|t, p, x| {
                Arch::Mlp(act).forward(t, p, x)
            })
            .1
            .iter()
            .flat_map(|t| t.data().to_vec())
            .collect::<Vec<f64>>()
        };
        let (gp, gm) = (grad_at(EPS), grad_at(-EPS));
        let fd: Vec<f64> = gp
            .iter()
            .zip(&gm)
            .map(|(a, b)| (a - b) / (2.0 * EPS))
            .collect();
        out.push(Check::rel(
            format!("Hessian-vector product (double backward, {act:?} MLP)"),
            rel_err(&hv, &fd),
        ));
    }
    out
}

/// The CNN's loss (conv 3×3 → ReLU → 2×2 average pool, twice, then a
/// linear layer) on a tiny problem: its gradient in the weights, and its
/// double backward (the gradient of `⟨∇L, v⟩`, a Hessian-vector product),
/// against central differences.
pub fn check_cnn(seed: u64) -> Vec<Check> {
    use crate::meta::model::cnn::{Cnn, CnnShape};
    let mut rng = SplitMix::new(seed);
    let shape = CnnShape {
        height: 4,
        width: 8,
        channels: 2,
        conv1: 3,
        conv2: 2,
        classes: 3,
    };
    let model = Cnn::<f64>::new(shape, seed);
    let x = random(&mut rng, &[3, 4 * 8 * 2], -1.0, 1.0);
    let labels = [2, 0, 1];
    let f = move |t: &mut Tape<f64>, w: &[Var]| {
        let xv = t.constant(x.clone());
        crate::meta::model::Arch::Cnn(shape).loss(t, w, xv, &labels)
    };
    let v: Vec<Tensor<f64>> = model
        .params
        .iter()
        .map(|p| random(&mut rng, p.shape(), -1.0, 1.0))
        .collect();
    let g = directional(&f, v);
    vec![
        Check::rel(
            format!("CNN loss ({} weights): gradient", model.num_params()),
            grad_error(&f, &model.params),
        ),
        Check::rel(
            "CNN loss: double backward (Hessian-vector product)",
            grad_error(&g, &model.params),
        ),
    ]
}
