//! The learned second stage: a small network over text features that scores what the rules
//! let through.
//!
//! The features come from outside this crate (a [`Featurizer`]; the shipped one reads
//! all-MiniLM-L6-v2's token embeddings, see `octollm_llm::embed::token_features`), the weights
//! are committed (`classifier/injection.json`, written by `scripts/reflex-train.py`), and the
//! arithmetic is here: standardise, one hidden layer of ReLU units, a logistic output. The
//! score is the probability the network gives to "attack"; at or above the trained threshold
//! the text is blocked with a finding of kind `classifier`.

use std::sync::Arc;

use serde::Deserialize;

pub const LABEL: &str = "injection_classifier";

/// The weights shipped with this version.
pub const SHIPPED: &str = include_str!("../classifier/injection.json");

/// Turns a text into the classifier's input vector.
pub trait Featurizer: Send + Sync {
    /// Which features (must equal the weights' `features`).
    fn name(&self) -> &str;
    fn features(&self, text: &str) -> Result<Vec<f32>, String>;
}

/// A trained network and how it was trained.
#[derive(Debug, Clone, Deserialize)]
pub struct Weights {
    /// The featurizer these weights expect.
    pub features: String,
    pub dim: usize,
    pub hidden: usize,
    pub mean: Vec<f32>,
    pub scale: Vec<f32>,
    /// Hidden layer, row-major `hidden × dim`.
    pub w1: Vec<f32>,
    pub b1: Vec<f32>,
    pub w2: Vec<f32>,
    pub b2: f32,
    /// Scores at or above block.
    pub threshold: f32,
    /// Texts shorter than this (in chars) are left to the rules.
    pub min_chars: usize,
    /// `w1` transposed (`dim × hidden`), built at parse: the score adds one column per
    /// non-zero input, so inputs that are mostly zero (the word buckets) cost what is set.
    #[serde(skip)]
    columns: Vec<f32>,
}

impl Weights {
    pub fn parse(json: &str) -> Result<Self, String> {
        let mut w: Weights =
            serde_json::from_str(json).map_err(|e| format!("classifier weights: {e}"))?;
        let shapes = [
            (w.mean.len(), w.dim, "mean"),
            (w.scale.len(), w.dim, "scale"),
            (w.w1.len(), w.dim * w.hidden, "w1"),
            (w.b1.len(), w.hidden, "b1"),
            (w.w2.len(), w.hidden, "w2"),
        ];
        for (got, want, name) in shapes {
            if got != want {
                return Err(format!(
                    "classifier weights: {name} has {got} values, expected {want}"
                ));
            }
        }
        if !(0.0..=1.0).contains(&w.threshold) {
            return Err(format!(
                "classifier weights: threshold {} is not in 0..=1",
                w.threshold
            ));
        }
        w.columns = vec![0.0; w.w1.len()];
        for (h, row) in w.w1.chunks_exact(w.dim).enumerate() {
            for (i, v) in row.iter().enumerate() {
                w.columns[i * w.hidden + h] = *v;
            }
        }
        Ok(w)
    }

    pub fn shipped() -> Result<Self, String> {
        Self::parse(SHIPPED)
    }

    /// The probability of "attack" for one feature vector.
    pub fn score(&self, x: &[f32]) -> Result<f32, String> {
        if x.len() != self.dim {
            return Err(format!("{} features, expected {}", x.len(), self.dim));
        }
        let mut hidden = self.b1.clone();
        for (i, v) in x.iter().enumerate() {
            let z = (v - self.mean[i]) / self.scale[i];
            if z == 0.0 {
                continue;
            }
            let column = &self.columns[i * self.hidden..(i + 1) * self.hidden];
            for (a, w) in hidden.iter_mut().zip(column) {
                *a += z * w;
            }
        }
        let logit = hidden
            .iter()
            .zip(&self.w2)
            .fold(self.b2, |acc, (a, w)| acc + a.max(0.0) * w);
        Ok(1.0 / (1.0 + (-logit).exp()))
    }
}

/// The weights with the featurizer they need.
pub struct Classifier {
    weights: Weights,
    featurizer: Arc<dyn Featurizer>,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("features", &self.weights.features)
            .field("threshold", &self.weights.threshold)
            .finish()
    }
}

impl Classifier {
    pub fn new(weights: Weights, featurizer: Arc<dyn Featurizer>) -> Result<Self, String> {
        if featurizer.name() != weights.features {
            return Err(format!(
                "the weights expect features {:?}, the featurizer gives {:?}",
                weights.features,
                featurizer.name()
            ));
        }
        Ok(Self {
            weights,
            featurizer,
        })
    }

    pub fn threshold(&self) -> f32 {
        self.weights.threshold
    }

    /// Whether the classifier looks at `text` at all (long enough to be worth it).
    pub fn applies(&self, text: &str) -> bool {
        text.len() >= self.weights.min_chars && text.chars().count() >= self.weights.min_chars
    }

    pub fn score(&self, text: &str) -> Result<f32, String> {
        let x = self.featurizer.features(text)?;
        self.weights.score(&x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Vec<f32>);
    impl Featurizer for Fixed {
        fn name(&self) -> &str {
            "fixed"
        }
        fn features(&self, _: &str) -> Result<Vec<f32>, String> {
            Ok(self.0.clone())
        }
    }

    fn weights() -> Weights {
        Weights::parse(
            r#"{"features":"fixed","dim":2,"hidden":1,"mean":[0,0],"scale":[1,1],"w1":[1,-1],
                "b1":[0],"w2":[2],"b2":-1,"threshold":0.5,"min_chars":3}"#,
        )
        .unwrap()
    }

    #[test]
    fn a_wider_layer_scores_as_the_plain_sum() {
        // Two hidden units over three inputs, the middle one zero (skipped by the column walk).
        let w = Weights::parse(
            r#"{"features":"f","dim":3,"hidden":2,"mean":[0,0,1],"scale":[1,1,2],
                "w1":[1,2,3, -1,0.5,1],"b1":[0.1,0.2],"w2":[1,-2],"b2":0.3,
                "threshold":0.5,"min_chars":1}"#,
        )
        .unwrap();
        let x = [0.5f32, 0.0, 3.0];
        let z = [0.5f32, 0.0, 1.0];
        let h0 = (1.0 * z[0] + 2.0 * z[1] + 3.0 * z[2] + 0.1f32).max(0.0);
        let h1 = (-z[0] + 0.5 * z[1] + z[2] + 0.2f32).max(0.0);
        let want = 1.0 / (1.0 + (-(h0 - 2.0 * h1 + 0.3f32)).exp());
        let got = w.score(&x).unwrap();
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn scores_with_one_hidden_layer() {
        let w = weights();
        // relu(1 - 0) * 2 - 1 = 1 → sigmoid(1)
        let s = w.score(&[1.0, 0.0]).unwrap();
        assert!((s - 0.731_058_6).abs() < 1e-5, "{s}");
        // relu(-1) = 0 → sigmoid(-1)
        let s = w.score(&[0.0, 1.0]).unwrap();
        assert!((s - 0.268_941_4).abs() < 1e-5, "{s}");
        assert!(w.score(&[1.0]).is_err());
    }

    #[test]
    fn the_featurizer_must_match_the_weights() {
        let mut w = weights();
        w.features = "other".into();
        assert!(Classifier::new(w, Arc::new(Fixed(vec![0.0, 0.0]))).is_err());
        let c = Classifier::new(weights(), Arc::new(Fixed(vec![1.0, 0.0]))).unwrap();
        assert!(c.applies("abcd") && !c.applies("ab"));
        assert!(c.score("anything").unwrap() > c.threshold());
    }

    #[test]
    fn malformed_weights_are_refused() {
        assert!(Weights::parse("{}").is_err());
        let bad = r#"{"features":"f","dim":2,"hidden":1,"mean":[0],"scale":[1,1],"w1":[1,1],"b1":[0],"w2":[1],"b2":0,"threshold":0.5,"min_chars":1}"#;
        assert!(Weights::parse(bad).unwrap_err().contains("mean"));
    }
}
