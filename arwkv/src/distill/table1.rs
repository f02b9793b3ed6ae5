//! The paper's Table 1 on a preset: three students distilled with the same budget (stage 1, then
//! stage 2) from several seeds, each compared with its teacher on the held-out text.
//!
//! * **ARWKV**: no output gate, MLPs frozen in stage 2 (the paper's headline column);
//! * **active MLP**: no gate, MLPs trained in stage 2;
//! * **w/ gate & active MLP**: gate on, MLPs trained (our default student).
//!
//! The two gate-free students share their stage-1 run for a seed: stage 1 trains only the time
//! mixers, so freezing the MLPs makes no difference before stage 2. A seed sets both the students'
//! initialisation and the order of the data.

use std::path::Path;
use std::time::Instant;

use plotly::common::{ErrorData, ErrorType, Title};
use plotly::layout::{Axis, Layout};
use plotly::{Bar, Plot};
use serde::Serialize;

use super::preset::{PresetPlan, compare_on_heldout_text, student_of};
use super::run::{Observer, RunConfig, Stage, run};
use super::run_dir::Start;
use crate::error::{Error, Result};
pub use crate::eval::MeanSd;
use crate::eval::heldout::HeldoutReport;
use crate::save::write_atomic;

/// One of Table 1's students.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Table1Student {
    /// No gate, MLPs frozen in stage 2.
    Arwkv,
    /// No gate, MLPs trained in stage 2.
    ActiveMlp,
    /// Gate on, MLPs trained in stage 2.
    GateActiveMlp,
}

impl Table1Student {
    /// The three, in the paper's column order.
    pub const ALL: [Self; 3] = [Self::Arwkv, Self::ActiveMlp, Self::GateActiveMlp];

    /// The paper's name of the column.
    pub fn label(self) -> &'static str {
        match self {
            Self::Arwkv => "ARWKV",
            Self::ActiveMlp => "active MLP",
            Self::GateActiveMlp => "w/ gate & active MLP",
        }
    }

    /// Whether the student has the output gate.
    pub fn gate(self) -> bool {
        self == Self::GateActiveMlp
    }

    /// Whether stage 2 freezes the MLPs.
    pub fn freeze_mlp(self) -> bool {
        self == Self::Arwkv
    }

    fn dir_name(self) -> &'static str {
        match self {
            Self::Arwkv => "arwkv",
            Self::ActiveMlp => "active-mlp",
            Self::GateActiveMlp => "gate-active-mlp",
        }
    }
}

/// One column of the table: a student over all seeds.
#[derive(Clone, Debug, Serialize)]
pub struct Table1Row {
    /// The student.
    pub student: Table1Student,
    /// Held-out perplexity ratio student / teacher.
    pub perplexity_ratio: MeanSd,
    /// Mean KL(teacher ‖ student) per token, nats.
    pub mean_kl: MeanSd,
    /// Top-1 agreement with the teacher (fraction).
    pub top1_agreement: MeanSd,
    /// Each seed's report, in seed order.
    pub per_seed: Vec<HeldoutReport>,
}

/// What `run_table1` reports.
#[derive(Clone, Debug, Serialize)]
pub struct Table1Report {
    /// The preset.
    pub preset: String,
    /// The seeds.
    pub seeds: Vec<u64>,
    /// Stage-1 and stage-2 steps of every student.
    pub steps: (u64, u64),
    /// One row per student, in the paper's order.
    pub rows: Vec<Table1Row>,
    /// Seconds from start to report.
    pub wall_s: f64,
}

impl Table1Report {
    /// The table as Markdown (mean ± sd over seeds).
    pub fn to_markdown(&self) -> String {
        let mut s = format!(
            "Table 1 on preset `{}`: {} seed(s) ({:?}), {} stage-1 + {} stage-2 steps per student\n\n\
             | student | perplexity ratio (student / teacher) | KL(teacher ‖ student), nats | top-1 agreement, % |\n\
             |---|---:|---:|---:|\n",
            self.preset,
            self.seeds.len(),
            self.seeds,
            self.steps.0,
            self.steps.1
        );
        for r in &self.rows {
            s.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                r.student.label(),
                r.perplexity_ratio.show(3, 1.0),
                r.mean_kl.show(4, 1.0),
                r.top1_agreement.show(1, 100.0)
            ));
        }
        s
    }

    /// The three measures, each as (title, one mean ± sd per student in row order).
    pub fn measures(&self) -> Vec<Table1Measure> {
        type Get = fn(&Table1Row) -> MeanSd;
        let measures: [(&str, Get); 3] = [
            ("held-out perplexity ratio (student / teacher)", |r| {
                r.perplexity_ratio
            }),
            ("KL(teacher ‖ student), nats", |r| r.mean_kl),
            ("top-1 agreement", |r| r.top1_agreement),
        ];
        measures
            .iter()
            .map(|(title, get)| Table1Measure {
                title,
                bars: self
                    .rows
                    .iter()
                    .map(|r| (r.student.label().to_string(), get(r)))
                    .collect(),
            })
            .collect()
    }

    /// One bar chart per measure (in [`Self::measures`] order), error bars at ± one sd.
    pub fn figures(&self) -> Vec<Plot> {
        self.measures().iter().map(Table1Measure::figure).collect()
    }
}

/// One of Table 1's measures over the students.
#[derive(Clone, Debug)]
pub struct Table1Measure {
    /// What is measured (the chart's title and y axis).
    pub title: &'static str,
    /// (student label, mean ± sd over seeds), in row order.
    pub bars: Vec<(String, MeanSd)>,
}

impl Table1Measure {
    /// The Plotly bar chart, error bars at ± one sd.
    pub fn figure(&self) -> Plot {
        let labels: Vec<String> = self.bars.iter().map(|(l, _)| l.clone()).collect();
        let bar = Bar::new(labels, self.bars.iter().map(|(_, v)| v.mean).collect())
            .name(self.title)
            .error_y(
                ErrorData::new(ErrorType::Data)
                    .array(self.bars.iter().map(|(_, v)| v.sd.max(0.0)).collect()),
            );
        let mut plot = Plot::new();
        plot.add_trace(bar);
        plot.set_layout(
            Layout::new()
                .title(Title::with_text(self.title))
                .y_axis(Axis::new().title(Title::with_text(self.title)))
                .height(360),
        );
        plot
    }
}

/// Trains Table 1's three students on `plan` (its stage-1 and stage-2 budgets) from each seed under
/// `out` (`seed<k>/<student>-stage{1,2}`), compares each with the teacher on the held-out text, and
/// writes `table1.md`, `table1.json` and `table1.html` (the bar charts) into `out`.
pub fn run_table1(
    plan: &PresetPlan,
    seeds: &[u64],
    out: &Path,
    start: Start,
    observer: &mut dyn Observer,
) -> Result<Table1Report> {
    if seeds.is_empty() {
        return Err(Error::Invalid("table 1: give at least one seed".into()));
    }
    let started = Instant::now();
    let corpus = vec![plan.corpus.clone()];
    let mut stage2 = Vec::new(); // (student, seed index, config)
    for (i, &seed) in seeds.iter().enumerate() {
        let dir = out.join(format!("seed{seed}"));
        let mut stage1 = Vec::new(); // (gate, config)
        for gate in [false, true] {
            let name = if gate { "gated" } else { "gate-free" };
            let mut s1 = plan.stage(
                Stage::Align,
                corpus.clone(),
                dir.join(format!("{name}-stage1")),
                plan.align,
            );
            s1.seed = seed;
            s1.student_options.seed = seed;
            s1.student_options.gate = gate;
            run(&s1, start, observer)?;
            stage1.push((gate, s1));
        }
        for student in Table1Student::ALL {
            let (_, s1) = stage1
                .iter()
                .find(|(gate, _)| *gate == student.gate())
                .expect("both stage-1 students were trained");
            let mut s2 = plan.stage(
                Stage::Kl,
                corpus.clone(),
                dir.join(format!("{}-stage2", student.dir_name())),
                plan.kl,
            );
            s2.seed = seed;
            s2.student = Some(student_of(s1));
            s2.freeze_mlp = student.freeze_mlp();
            run(&s2, start, observer)?;
            stage2.push((student, i, s2));
        }
    }
    let labelled: Vec<(String, &RunConfig)> = stage2
        .iter()
        .map(|(student, i, cfg)| (format!("{} seed {}", student.label(), seeds[*i]), cfg))
        .collect();
    let refs: Vec<(&str, &RunConfig)> = labelled.iter().map(|(l, c)| (l.as_str(), *c)).collect();
    let reports = compare_on_heldout_text(
        plan,
        &refs,
        &plan.device.parse::<crate::BackendKind>()?.device()?,
    )?;
    let rows = Table1Student::ALL
        .iter()
        .map(|&student| {
            let per_seed: Vec<HeldoutReport> = stage2
                .iter()
                .zip(&reports)
                .filter(|((s, _, _), _)| *s == student)
                .map(|(_, (_, report))| report.clone())
                .collect();
            let stat = |f: fn(&HeldoutReport) -> f64| {
                MeanSd::of(&per_seed.iter().map(f).collect::<Vec<_>>())
            };
            Table1Row {
                student,
                perplexity_ratio: stat(|r| r.perplexity_ratio),
                mean_kl: stat(|r| r.mean_kl),
                top1_agreement: stat(|r| r.top1_agreement),
                per_seed,
            }
        })
        .collect();
    let report = Table1Report {
        preset: plan.name.clone(),
        seeds: seeds.to_vec(),
        steps: (plan.align.steps, plan.kl.steps),
        rows,
        wall_s: started.elapsed().as_secs_f64(),
    };
    write_table1(&report, out)?;
    Ok(report)
}

fn write_table1(report: &Table1Report, out: &Path) -> Result<()> {
    let md = report.to_markdown();
    let mut page =
        String::from("<!doctype html><html><head><meta charset=\"utf-8\"><title>Table 1</title>");
    page.push_str(&Plot::offline_js_sources());
    page.push_str("</head><body><h1>Table 1</h1><pre>");
    page.push_str(&md);
    page.push_str("</pre>");
    for (i, plot) in report.figures().iter().enumerate() {
        page.push_str(&plot.to_inline_html(Some(&format!("table1-{i}"))));
    }
    page.push_str("</body></html>");
    write_atomic(&out.join("table1.html"), page.as_bytes())?;
    write_atomic(&out.join("table1.md"), md.as_bytes())?;
    write_atomic(
        &out.join("table1.json"),
        serde_json::to_string_pretty(report)
            .expect("report serialises")
            .as_bytes(),
    )
}
