//! The fused step's update rule from Python: an optimizer's name and its
//! hyperparameters (given in full by the caller; the defaults live in
//! `ferrograd.optimizers`).

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::kernels::optimizer::Optimizer;

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
