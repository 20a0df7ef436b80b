//! The fused step's update rule from Python: an optimizer's name and its
//! hyperparameters (given in full by the caller; the defaults live in
//! `ferrograd.optimizers`).

use numpy::{
    Element, IntoPyArray, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyReadwriteArrayDyn,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::convert::{dispatch, float_array, run, same_dtype};
use crate::kernels::optimizer::{
    add_scaled as add_scaled_kernel, apply, max_abs as max_abs_kernel, Optimizer,
};
use crate::kernels::parallel;
use crate::kernels::Float;

/// The rule named `name` with exactly the hyperparameters it takes, by the book's names:
/// sgd, adagrad {lr}; momentum, nesterov {lr, momentum}; rmsprop {lr, decay_rate};
/// adam {lr, beta1, beta2}. Rates are checked by the kernel ([`Optimizer::check`]).
pub fn parse_optimizer(
    op: &str,
    name: &str,
    hyperparameters: &Bound<'_, PyDict>,
) -> PyResult<Optimizer> {
    let keys: &[&str] = match name {
        "sgd" | "adagrad" => &["lr"],
        "momentum" | "nesterov" => &["lr", "momentum"],
        "rmsprop" => &["lr", "decay_rate"],
        "adam" => &["lr", "beta1", "beta2"],
        other => {
            return Err(PyValueError::new_err(format!(
                "{op}: optimizer must be one of 'sgd', 'momentum', 'nesterov', 'adagrad', \
                 'rmsprop', 'adam', got {other:?}"
            )))
        }
    };
    let mut given: Vec<String> = Vec::with_capacity(hyperparameters.len());
    for key in hyperparameters.keys() {
        given.push(key.extract::<String>().map_err(|_| {
            PyTypeError::new_err(format!("{op}: hyperparameter names must be str"))
        })?);
    }
    given.sort();
    let mut want: Vec<&str> = keys.to_vec();
    want.sort_unstable();
    if given != want {
        return Err(PyValueError::new_err(format!(
            "{op}: {name} takes the hyperparameters {keys:?}, got {given:?}"
        )));
    }
    let value = |key: &str| -> PyResult<f64> {
        let v = hyperparameters
            .get_item(key)?
            .ok_or_else(|| PyValueError::new_err(format!("{op}: {key} is missing")))?;
        v.extract::<f64>().map_err(|_| {
            PyTypeError::new_err(format!("{op}: {key} must be a real number, got {v}"))
        })
    };
    Ok(match name {
        "sgd" => Optimizer::Sgd { lr: value("lr")? },
        "adagrad" => Optimizer::AdaGrad { lr: value("lr")? },
        "momentum" => Optimizer::Momentum {
            lr: value("lr")?,
            momentum: value("momentum")?,
        },
        "nesterov" => Optimizer::Nesterov {
            lr: value("lr")?,
            momentum: value("momentum")?,
        },
        "rmsprop" => Optimizer::RmsProp {
            lr: value("lr")?,
            decay_rate: value("decay_rate")?,
        },
        _ => Optimizer::Adam {
            lr: value("lr")?,
            beta1: value("beta1")?,
            beta2: value("beta2")?,
        },
    })
}

/// A fused trainer's `run` options: the rule's `hyperparameters` (when given, parsed
/// for the trainer's rule `name`) and the per-step `learning_rates`.
pub fn run_options(
    op: &str,
    name: &str,
    hyperparameters: Option<&Bound<'_, PyDict>>,
    learning_rates: Option<numpy::PyReadonlyArray1<'_, f64>>,
) -> PyResult<(Option<Optimizer>, Option<Vec<f64>>)> {
    let optimizer = match hyperparameters {
        Some(h) => Some(parse_optimizer(op, name, h)?),
        None => None,
    };
    Ok((optimizer, learning_rates.map(|a| a.as_array().to_vec())))
}

/// One update of every parameter by the rule `name` with `hyperparameters` (as
/// [`parse_optimizer`]), in place: ``params[i]`` from ``grads[i]`` and the rule's state
/// arrays ``states[s][i]``; `iteration` is Adam's t after this step's increment. The
/// book's formulas operation by operation, as `ferrograd.optimizers` computes them with
/// NumPy (the same bits), in one pass per array and without temporary arrays. Returns
/// False and changes nothing unless every array is a C-contiguous ndarray of the first
/// parameter's float dtype with its parameter's shape, and the arrays it writes can be
/// borrowed (writeable, not overlapping each other or a gradient): the caller then
/// takes NumPy.
#[pyfunction]
#[pyo3(signature = (name, hyperparameters, params, grads, states, iteration))]
pub fn optimizer_update<'py>(
    py: Python<'py>,
    name: &str,
    hyperparameters: &Bound<'py, PyDict>,
    params: &Bound<'py, PyList>,
    grads: &Bound<'py, PyList>,
    states: &Bound<'py, PyList>,
    iteration: u64,
) -> PyResult<bool> {
    const OP: &str = "optimizer_update";
    let opt = parse_optimizer(OP, name, hyperparameters)?;
    opt.check(OP)?;
    let Ok(first) = params.get_item(0) else {
        return Ok(true);
    };
    let lists = (params, grads, states);
    if first.cast::<PyArrayDyn<f32>>().is_ok() {
        update_all::<f32>(py, opt, lists, iteration)
    } else if first.cast::<PyArrayDyn<f64>>().is_ok() {
        update_all::<f64>(py, opt, lists, iteration)
    } else {
        Ok(false)
    }
}

/// [`optimizer_update`] for parameters of dtype T.
fn update_all<T: Float + Element>(
    py: Python<'_>,
    opt: Optimizer,
    (params, grads, states): (&Bound<'_, PyList>, &Bound<'_, PyList>, &Bound<'_, PyList>),
    iteration: u64,
) -> PyResult<bool> {
    let n = params.len();
    if grads.len() != n || states.len() != opt.state_slots() {
        return Ok(false);
    }
    let mut sets = Vec::with_capacity(states.len());
    for set in states.iter() {
        match set.cast_into::<PyList>() {
            Ok(set) if set.len() == n => sets.push(set),
            _ => return Ok(false),
        }
    }
    // Every array borrowed before any is written: all or nothing.
    let (mut ps, mut gs) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut ss: Vec<Vec<PyReadwriteArrayDyn<'_, T>>> = sets.iter().map(|_| Vec::new()).collect();
    for i in 0..n {
        let Ok(p) = params.get_item(i)?.cast_into::<PyArrayDyn<T>>() else {
            return Ok(false);
        };
        let Ok(g) = grads.get_item(i)?.cast_into::<PyArrayDyn<T>>() else {
            return Ok(false);
        };
        let (Ok(p), Ok(g)) = (p.try_readwrite(), g.try_readonly()) else {
            return Ok(false);
        };
        if g.shape() != p.shape() || !p.is_c_contiguous() || !g.is_c_contiguous() {
            return Ok(false);
        }
        for (set, out) in sets.iter().zip(ss.iter_mut()) {
            let Ok(s) = set.get_item(i)?.cast_into::<PyArrayDyn<T>>() else {
                return Ok(false);
            };
            let Ok(s) = s.try_readwrite() else {
                return Ok(false);
            };
            if s.shape() != p.shape() || !s.is_c_contiguous() {
                return Ok(false);
            }
            out.push(s);
        }
        ps.push(p);
        gs.push(g);
    }
    let mut jobs = Vec::with_capacity(n);
    let mut states = ss.iter_mut().map(|s| s.iter_mut()).collect::<Vec<_>>();
    for (p, g) in ps.iter_mut().zip(&gs) {
        let mut own = states.iter_mut().filter_map(Iterator::next);
        let (s0, s1) = (own.next(), own.next());
        let slices = (
            p.as_slice_mut(),
            g.as_slice(),
            s0.map(|s| s.as_slice_mut()).transpose(),
            s1.map(|s| s.as_slice_mut()).transpose(),
        );
        let (Ok(p), Ok(g), Ok(s0), Ok(s1)) = slices else {
            return Ok(false);
        };
        jobs.push((p, g, s0.unwrap_or_default(), s1.unwrap_or_default()));
    }
    let work = jobs.iter().map(|(p, ..)| p.len()).sum::<usize>();
    run(py, work, || {
        // Pieces of at most PIECE elements, shared with the team's threads when the
        // step is large (each element's update is the same wherever it runs).
        let mut pieces = Vec::new();
        for (p, g, s0, s1) in jobs {
            let (mut p, mut g, mut s0, mut s1) = (p, g, s0, s1);
            while !p.is_empty() {
                let k = p.len().min(PIECE);
                // Unused state slots are empty and stay so.
                let (k0, k1) = (k.min(s0.len()), k.min(s1.len()));
                let (a, rest) = std::mem::take(&mut p).split_at_mut(k);
                let (b, g_rest) = g.split_at(k);
                let (c, s0_rest) = std::mem::take(&mut s0).split_at_mut(k0);
                let (d, s1_rest) = std::mem::take(&mut s1).split_at_mut(k1);
                pieces.push((a, b, c, d));
                (p, g, s0, s1) = (rest, g_rest, s0_rest, s1_rest);
            }
        }
        if work >= PARALLEL_MIN_ELEMENTS {
            parallel::split_items(pieces, |(p, g, s0, s1)| apply(opt, p, g, s0, s1, iteration));
        } else {
            for (p, g, s0, s1) in pieces {
                apply(opt, p, g, s0, s1, iteration);
            }
        }
    });
    Ok(true)
}

/// Elements per piece of an optimizer step, and the step size from which the pieces
/// are shared with the team's threads (a 784×100 layer and up).
const PIECE: usize = 1 << 14;
const PARALLEL_MIN_ELEMENTS: usize = 1 << 16;

/// a + alpha·b elementwise, rounded as NumPy's ``a + alpha * b`` (the weight-decay
/// gradient dW + λ·W in one pass): a and b of one shape and dtype, float32 or float64.
#[pyfunction]
pub fn add_scaled<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    b: &Bound<'py, PyAny>,
    alpha: f64,
) -> PyResult<Bound<'py, PyAny>> {
    dispatch!(float_array("add_scaled", "a", a)?, a => add_scaled_t(py, a, b, alpha))
}

fn add_scaled_t<'py, T: Float + Element>(
    py: Python<'py>,
    a: PyReadonlyArrayDyn<'py, T>,
    b: &Bound<'py, PyAny>,
    alpha: f64,
) -> PyResult<Bound<'py, PyAny>> {
    let b = same_dtype::<T>("add_scaled", "b", b)?;
    let (a, b) = (a.as_array(), b.as_array());
    let out = run(py, a.len(), || add_scaled_kernel(a, b, alpha))?;
    Ok(out.into_pyarray(py).into_any())
}

/// The largest |a| over a float32/float64 array's elements, or inf when one is not
/// finite (inf or NaN); 0.0 for an empty array.
#[pyfunction]
pub fn max_abs(a: &Bound<'_, PyAny>) -> PyResult<f64> {
    Ok(dispatch!(float_array("max_abs", "a", a)?, a => max_abs_kernel(a.as_array()).to_f64()))
}
