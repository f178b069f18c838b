//! A picture of a soak, as an SVG written by hand.
//!
//! A verdict says "grows 40 MB/day, threshold 10"; a reviewer still wants to see whether that
//! is a steady leak, a step after a fault, or noise that a few outliers tilted. One plot
//! answers: the samples, the warm-up left out of the fit, the fitted trend, and the threshold
//! drawn from where the trend starts so the two slopes can be compared by eye.
//!
//! The frame fits the samples the trend was fitted to, not the warm-up's climb (a leak of a
//! MB an hour over a climb from a few MB is a flat line); the warm-up's samples are drawn
//! faint and may leave the frame. The samples are drawn last, over the trend, and the notes
//! are wrapped to the width.
//!
//! Written by hand, not with plotters: its SVG backend (plotters-svg 0.3.7, `SVGTag`) writes
//! eight kinds of element (svg, circle, line, polyline, rect, text, image, polygon) and nothing
//! inside them, so a mark could not carry the event it stands for as its `<title>` (what a
//! reader hovers to learn which fault a line is), nor could the plot area clip the warm-up's
//! samples that leave the frame. Without a font file its text measurement is an estimate too
//! (175 px for 32 characters at 12 px, measured), as the fixed advance used here for the
//! legend and the notes is. The output is deterministic:
//! the same inputs give the same bytes, so a plot can be a CI artifact and compared between
//! runs.

/// At most this many points go into the samples' polyline; more add bytes, not detail.
pub const MAX_POINTS: usize = 2000;

const WIDTH: f64 = 960.0;
const PLOT_LEFT: f64 = 80.0;
const PLOT_RIGHT: f64 = WIDTH - 28.0;
const PLOT_TOP: f64 = 76.0;
const PLOT_BOTTOM: f64 = PLOT_TOP + 360.0;
const TITLE_Y: f64 = 28.0;
const LEGEND_Y: f64 = 54.0;
const NOTES_TOP: f64 = PLOT_BOTTOM + 70.0;
const NOTE_LINE: f64 = 18.0;
/// The most characters of a note on one line: the width, less a margin each side.
const NOTE_CHARS: usize = ((WIDTH - 48.0) / CHAR_WIDTH) as usize;
/// An estimate of the advance of one character at the 12 px font size, for laying out the
/// legend; SVG has no text measurement.
const CHAR_WIDTH: f64 = 6.8;
const SECONDS_PER_DAY: f64 = 86_400.0;

const SAMPLE_COLOUR: &str = "#1f5fa8";
const TREND_COLOUR: &str = "#e07b00";
const THRESHOLD_COLOUR: &str = "#c4161c";
const WARMUP_COLOUR: &str = "#e6e6e6";
/// The warm-up's samples: faint, and free to leave the frame, which fits the judged ones.
const WARMUP_SAMPLE_COLOUR: &str = "#a9c1dd";
const GRID_COLOUR: &str = "#ececec";
const MARK_COLOUR: &str = "#7a3db8";

/// Draws a soak as an SVG document.
///
/// - `samples`: (seconds since the soak's start, MB), in time order; points that are not
///   finite numbers are left out.
/// - `trend`: the line fitted to the samples after warm-up, as (slope in MB per second,
///   intercept in MB at second 0); drawn over the post-warm-up span.
/// - `threshold_mb_per_day`: drawn, when there is a trend, as a line of that slope starting
///   at the trend's value at the end of the warm-up. A threshold so steep that keeping it in
///   view would flatten the samples leaves the frame instead.
/// - `warmup_secs`: shaded from the start.
/// - `title` goes on top, `notes` (such as the verdict) as text lines under the plot.
///
/// ```
/// let samples: Vec<(f64, f64)> = (0..600).map(|i| (i as f64, 100.0 + i as f64 * 0.001)).collect();
/// let svg = quiesce_soak::plot::svg(&samples, Some((0.001, 100.0)), 10.0, 60.0, "soak", &[]);
/// assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
/// ```
pub fn svg(
    samples: &[(f64, f64)],
    trend: Option<(f64, f64)>,
    threshold_mb_per_day: f64,
    warmup_secs: f64,
    title: &str,
    notes: &[String],
) -> String {
    svg_with_marks(
        samples,
        trend,
        threshold_mb_per_day,
        warmup_secs,
        title,
        notes,
        &[],
    )
}

/// [`svg`] with `marks`: (seconds since the soak's start, what happened), each drawn as a
/// thin vertical line across the frame whose tooltip says what it was. A soak with periodic
/// faults shows each fault where it came, so a step or a sawtooth can be laid against them.
///
/// ```
/// let samples: Vec<(f64, f64)> = (0..600).map(|i| (i as f64, 100.0)).collect();
/// let marks = [(120.0, "fault: proxy down on kafka".to_owned())];
/// let svg = quiesce_soak::plot::svg_with_marks(&samples, None, 10.0, 60.0, "soak", &[], &marks);
/// assert!(svg.contains("<title>fault: proxy down on kafka</title>"));
/// ```
pub fn svg_with_marks(
    samples: &[(f64, f64)],
    trend: Option<(f64, f64)>,
    threshold_mb_per_day: f64,
    warmup_secs: f64,
    title: &str,
    notes: &[String],
    marks: &[(f64, String)],
) -> String {
    let samples: Vec<(f64, f64)> = samples
        .iter()
        .copied()
        .filter(|(t, mb)| t.is_finite() && mb.is_finite())
        .collect();
    let trend = trend.filter(|(slope, intercept)| slope.is_finite() && intercept.is_finite());
    let notes: Vec<String> = notes
        .iter()
        .flat_map(|note| wrap(note, NOTE_CHARS))
        .collect();
    let height = if notes.is_empty() {
        PLOT_BOTTOM + 56.0
    } else {
        NOTES_TOP + NOTE_LINE * (notes.len() - 1) as f64 + 14.0
    };

    let mut out = String::new();
    out.push_str(&format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" font-family=\"DejaVu Sans, Arial, sans-serif\" \
         font-size=\"12\">\n"
    ));
    out.push_str(&format!("<title>{}</title>\n", escape(title)));
    out.push_str("<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
    out.push_str(&format!(
        "<text x=\"{}\" y=\"{TITLE_Y}\" text-anchor=\"middle\" font-size=\"16\" \
         font-weight=\"bold\">{}</text>\n",
        WIDTH / 2.0,
        escape(title)
    ));

    if samples.is_empty() {
        out.push_str(&frame());
        out.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"16\" fill=\"#666\">\
             no samples</text>\n",
            (PLOT_LEFT + PLOT_RIGHT) / 2.0,
            (PLOT_TOP + PLOT_BOTTOM) / 2.0
        ));
    } else {
        out.push_str(&plot(
            &samples,
            trend,
            threshold_mb_per_day,
            warmup_secs,
            marks,
        ));
    }

    for (i, note) in notes.iter().enumerate() {
        out.push_str(&format!(
            "<text x=\"24\" y=\"{}\" xml:space=\"preserve\">{}</text>\n",
            NOTES_TOP + NOTE_LINE * i as f64,
            escape(note)
        ));
    }
    out.push_str("</svg>\n");
    out
}

/// Where everything goes: the axes fitted to the samples, the trend and the threshold.
struct Layout {
    x_min: f64,
    warmup_end: f64,
    /// Where the trend was fitted from: the samples before it are the warm-up's.
    fit_start: f64,
    trend_line: Option<Line>,
    threshold_line: Option<Line>,
    x_axis: Axis,
    unit: TimeUnit,
    y_axis: Axis,
    scale: Scale,
}

/// From one (seconds, MB) point to another.
type Line = ((f64, f64), (f64, f64));

/// Lays out at least one sample.
fn layout(
    samples: &[(f64, f64)],
    trend: Option<(f64, f64)>,
    threshold_mb_per_day: f64,
    warmup_secs: f64,
) -> Layout {
    let first_t = samples[0].0;
    let x_min = first_t.min(0.0);
    let mut x_max = samples.iter().map(|s| s.0).fold(first_t, f64::max);
    if x_max <= x_min {
        x_max = x_min + 1.0;
    }
    let warmup_end = warmup_secs.clamp(x_min, x_max);
    // The trend covers what it was fitted to: the samples after warm-up (all of them when
    // the soak never got past its warm-up).
    let fit_start = if warmup_end < x_max {
        warmup_end
    } else {
        x_min
    };
    let trend_line = trend.map(|(slope, intercept)| {
        let at = |t: f64| intercept + slope * t;
        ((fit_start, at(fit_start)), (x_max, at(x_max)))
    });
    let threshold_line =
        trend_line
            .filter(|_| threshold_mb_per_day.is_finite())
            .map(|((t0, mb0), _)| {
                let slope = threshold_mb_per_day / SECONDS_PER_DAY;
                ((t0, mb0), (x_max, mb0 + slope * (x_max - t0)))
            });

    // The axis fits the samples the trend was fitted to: a warm-up climb from a few MB
    // would flatten a leak of one MB an hour into a line. The warm-up's samples are drawn
    // faint and may leave the frame.
    let judged = &samples[samples.partition_point(|s| s.0 < fit_start)..];
    let (mut y_lo, mut y_hi) = judged
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), s| {
            (lo.min(s.1), hi.max(s.1))
        });
    if let Some(((_, a), (_, b))) = trend_line {
        y_lo = y_lo.min(a).min(b);
        y_hi = y_hi.max(a).max(b);
    }
    if let Some((_, (_, end))) = threshold_line {
        // Keep the threshold's end in view unless that would squeeze the samples into less
        // than a third of the height; then the line leaves the frame, which says enough.
        let (lo, hi) = (y_lo.min(end), y_hi.max(end));
        if hi - lo <= 3.0 * (y_hi - y_lo).max(MIN_Y_SPAN) {
            (y_lo, y_hi) = (lo, hi);
        }
    }
    let y_axis = Axis::megabytes(y_lo, y_hi);
    let (x_axis, unit) = Axis::time(x_min, x_max);
    let scale = Scale {
        x_min,
        x_max,
        y_min: y_axis.min,
        y_max: y_axis.max,
    };

    Layout {
        x_min,
        warmup_end,
        fit_start,
        trend_line,
        threshold_line,
        x_axis,
        unit,
        y_axis,
        scale,
    }
}

/// The axes' ticks, labels and names, outside the frame.
fn axes(layout: &Layout) -> String {
    let Layout {
        x_axis,
        y_axis,
        scale,
        unit,
        ..
    } = layout;
    let mut out = String::new();
    for (&tick, label) in y_axis.ticks.iter().zip(&y_axis.labels) {
        let y = scale.y(tick);
        out.push_str(&format!(
            "<line x1=\"{}\" y1=\"{y:.1}\" x2=\"{PLOT_LEFT}\" y2=\"{y:.1}\" stroke=\"#333\"/>\n\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>\n",
            PLOT_LEFT - 5.0,
            PLOT_LEFT - 8.0,
            y + 4.0,
        ));
    }
    for (&tick, label) in x_axis.ticks.iter().zip(&x_axis.labels) {
        let x = scale.x(tick);
        out.push_str(&format!(
            "<line x1=\"{x:.1}\" y1=\"{PLOT_BOTTOM}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#333\"/>\n\
             <text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{label}</text>\n",
            PLOT_BOTTOM + 5.0,
            PLOT_BOTTOM + 19.0,
        ));
    }
    out.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">time since start ({})</text>\n",
        (PLOT_LEFT + PLOT_RIGHT) / 2.0,
        PLOT_BOTTOM + 40.0,
        unit.name()
    ));
    let mid = (PLOT_TOP + PLOT_BOTTOM) / 2.0;
    out.push_str(&format!(
        "<text x=\"20\" y=\"{mid}\" text-anchor=\"middle\" \
         transform=\"rotate(-90 20 {mid})\">MB</text>\n"
    ));
    out
}

/// Everything between the title and the notes, for at least one sample.
fn plot(
    samples: &[(f64, f64)],
    trend: Option<(f64, f64)>,
    threshold_mb_per_day: f64,
    warmup_secs: f64,
    marks: &[(f64, String)],
) -> String {
    let layout = layout(samples, trend, threshold_mb_per_day, warmup_secs);
    let Layout {
        x_min,
        warmup_end,
        fit_start,
        trend_line,
        threshold_line,
        ref x_axis,
        ref y_axis,
        ref scale,
        ..
    } = layout;
    let x_max = scale.x_max;
    let (warming, judged) = samples.split_at(samples.partition_point(|s| s.0 < fit_start));
    let mut out = String::new();
    out.push_str(&format!(
        "<defs><clipPath id=\"plot-area\"><rect x=\"{PLOT_LEFT}\" y=\"{PLOT_TOP}\" \
         width=\"{}\" height=\"{}\"/></clipPath></defs>\n",
        PLOT_RIGHT - PLOT_LEFT,
        PLOT_BOTTOM - PLOT_TOP
    ));

    let mut legend = Legend::default();
    legend.line("samples", SAMPLE_COLOUR, None);
    out.push_str("<g clip-path=\"url(#plot-area)\">\n");
    if warmup_end > x_min {
        out.push_str(&format!(
            "<rect x=\"{PLOT_LEFT}\" y=\"{PLOT_TOP}\" width=\"{:.1}\" height=\"{}\" \
             fill=\"{WARMUP_COLOUR}\"/>\n",
            scale.x(warmup_end) - PLOT_LEFT,
            PLOT_BOTTOM - PLOT_TOP
        ));
        legend.area(
            &format!("warm-up ({})", TimeUnit::describe(warmup_end - x_min)),
            WARMUP_COLOUR,
        );
    }
    for &tick in &y_axis.ticks {
        let y = scale.y(tick);
        out.push_str(&format!(
            "<line x1=\"{PLOT_LEFT}\" y1=\"{y:.1}\" x2=\"{PLOT_RIGHT}\" y2=\"{y:.1}\" \
             stroke=\"{GRID_COLOUR}\"/>\n"
        ));
    }
    for &tick in &x_axis.ticks {
        let x = scale.x(tick);
        out.push_str(&format!(
            "<line x1=\"{x:.1}\" y1=\"{PLOT_TOP}\" x2=\"{x:.1}\" y2=\"{PLOT_BOTTOM}\" \
             stroke=\"{GRID_COLOUR}\"/>\n"
        ));
    }

    let shown: Vec<&(f64, String)> = marks
        .iter()
        .filter(|(t, _)| t.is_finite() && (x_min..=x_max).contains(t))
        .collect();
    for (t, what) in &shown {
        let x = scale.x(*t);
        out.push_str(&format!(
            "<line x1=\"{x:.1}\" y1=\"{PLOT_TOP}\" x2=\"{x:.1}\" y2=\"{PLOT_BOTTOM}\" \
             stroke=\"{MARK_COLOUR}\" stroke-width=\"1\" stroke-dasharray=\"2 3\">\
             <title>{}</title></line>\n",
            escape(what)
        ));
    }
    if !shown.is_empty() {
        legend.line(
            &format!("events ({})", shown.len()),
            MARK_COLOUR,
            Some("2 3"),
        );
    }
    if !warming.is_empty() {
        // Joined to the first judged sample, so the two read as one series.
        let joined: Vec<(f64, f64)> = warming.iter().chain(judged.first()).copied().collect();
        out.push_str(&scale.polyline("warm-up", &joined, WARMUP_SAMPLE_COLOUR));
    }
    if let (Some(line), Some((slope, _))) = (trend_line, trend) {
        out.push_str(&scale.line(line, TREND_COLOUR, 2.0, None));
        legend.line(
            &format!("trend {} MB/day", signed_rate(slope * SECONDS_PER_DAY)),
            TREND_COLOUR,
            None,
        );
    }
    if let Some(line) = threshold_line {
        out.push_str(&scale.line(line, THRESHOLD_COLOUR, 1.6, Some("7 4")));
        legend.line(
            &format!("threshold {} MB/day", rate(threshold_mb_per_day)),
            THRESHOLD_COLOUR,
            Some("7 4"),
        );
    }
    // Last, so the samples stay visible over the trend fitted through them.
    out.push_str(&scale.polyline("samples", judged, SAMPLE_COLOUR));
    out.push_str("</g>\n");
    out.push_str(&frame());

    out.push_str(&axes(&layout));
    out.push_str(&legend.svg);
    out
}

fn frame() -> String {
    format!(
        "<rect x=\"{PLOT_LEFT}\" y=\"{PLOT_TOP}\" width=\"{}\" height=\"{}\" fill=\"none\" \
         stroke=\"#333\"/>\n",
        PLOT_RIGHT - PLOT_LEFT,
        PLOT_BOTTOM - PLOT_TOP
    )
}

/// Data coordinates to SVG coordinates inside the frame.
struct Scale {
    x_min: f64,
    x_max: f64,
    y_min: f64,
    y_max: f64,
}

impl Scale {
    fn x(&self, t: f64) -> f64 {
        PLOT_LEFT + (t - self.x_min) / (self.x_max - self.x_min) * (PLOT_RIGHT - PLOT_LEFT)
    }

    fn y(&self, mb: f64) -> f64 {
        PLOT_BOTTOM - (mb - self.y_min) / (self.y_max - self.y_min) * (PLOT_BOTTOM - PLOT_TOP)
    }

    /// `samples` as one line, thinned to at most [`MAX_POINTS`].
    fn polyline(&self, class: &str, samples: &[(f64, f64)], colour: &str) -> String {
        let points: Vec<String> = thin(samples)
            .iter()
            .map(|&(t, mb)| format!("{:.1},{:.1}", self.x(t), self.y(mb)))
            .collect();
        format!(
            "<polyline class=\"{class}\" points=\"{}\" fill=\"none\" stroke=\"{colour}\" \
             stroke-width=\"1.2\" stroke-linejoin=\"round\"/>\n",
            points.join(" ")
        )
    }

    fn line(
        &self,
        ((t0, mb0), (t1, mb1)): ((f64, f64), (f64, f64)),
        colour: &str,
        width: f64,
        dash: Option<&str>,
    ) -> String {
        let dash = dash
            .map(|d| format!(" stroke-dasharray=\"{d}\""))
            .unwrap_or_default();
        format!(
            "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{colour}\" \
             stroke-width=\"{width}\"{dash}/>\n",
            self.x(t0),
            self.y(mb0),
            self.x(t1),
            self.y(mb1)
        )
    }
}

/// Legend entries in one row between the title and the frame.
#[derive(Default)]
struct Legend {
    svg: String,
    /// Where the next entry starts.
    x: f64,
}

impl Legend {
    fn start(&mut self) -> f64 {
        if self.x == 0.0 {
            self.x = PLOT_LEFT;
        }
        self.x
    }

    fn finish(&mut self, x: f64, label: &str) {
        self.svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{}\">{}</text>\n",
            x + 30.0,
            LEGEND_Y + 4.0,
            escape(label)
        ));
        self.x = x + 30.0 + label.chars().count() as f64 * CHAR_WIDTH + 26.0;
    }

    fn line(&mut self, label: &str, colour: &str, dash: Option<&str>) {
        let x = self.start();
        let dash = dash
            .map(|d| format!(" stroke-dasharray=\"{d}\""))
            .unwrap_or_default();
        self.svg.push_str(&format!(
            "<line x1=\"{x:.1}\" y1=\"{LEGEND_Y}\" x2=\"{:.1}\" y2=\"{LEGEND_Y}\" \
             stroke=\"{colour}\" stroke-width=\"2\"{dash}/>\n",
            x + 24.0
        ));
        self.finish(x, label);
    }

    fn area(&mut self, label: &str, colour: &str) {
        let x = self.start();
        self.svg.push_str(&format!(
            "<rect x=\"{x:.1}\" y=\"{}\" width=\"24\" height=\"12\" fill=\"{colour}\" \
             stroke=\"#bbb\"/>\n",
            LEGEND_Y - 6.0
        ));
        self.finish(x, label);
    }
}

/// The smallest MB range the y axis spans, so a flat line is not drawn as noise magnified.
const MIN_Y_SPAN: f64 = 1.0;

/// One axis: its range, ticks inside it and their labels.
struct Axis {
    min: f64,
    max: f64,
    ticks: Vec<f64>,
    labels: Vec<String>,
}

impl Axis {
    /// A MB axis over at least [`MIN_Y_SPAN`], widened to whole tick steps.
    fn megabytes(lo: f64, hi: f64) -> Self {
        let (mut lo, mut hi) = (lo, hi);
        let span = hi - lo;
        if span < MIN_Y_SPAN {
            let middle = (lo + hi) / 2.0;
            (lo, hi) = (middle - MIN_Y_SPAN / 2.0, middle + MIN_Y_SPAN / 2.0);
        } else {
            // A margin so the extremes do not sit on the frame.
            (lo, hi) = (lo - span * 0.04, hi + span * 0.04);
        }
        let step = nice_step((hi - lo) / 6.0);
        let (min, max) = ((lo / step).floor() * step, (hi / step).ceil() * step);
        let ticks = ticks(min, max, step);
        let labels = ticks.iter().map(|&v| number(v, step)).collect();
        Self {
            min,
            max,
            ticks,
            labels,
        }
    }

    /// A time axis from `min` to `max` seconds, labelled in a unit that suits the span.
    fn time(min: f64, max: f64) -> (Self, TimeUnit) {
        let unit = TimeUnit::for_span(max - min);
        let (lo, hi) = (min / unit.seconds(), max / unit.seconds());
        let step = unit.step(hi - lo);
        let ticks: Vec<f64> = ticks((lo / step).ceil() * step, hi, step);
        let labels = ticks.iter().map(|&v| number(v, step)).collect();
        let axis = Self {
            min,
            max,
            ticks: ticks.iter().map(|v| v * unit.seconds()).collect(),
            labels,
        };
        (axis, unit)
    }
}

/// Multiples of `step` from `from` up to `to` (both included, give or take rounding).
fn ticks(from: f64, to: f64, step: f64) -> Vec<f64> {
    let count = ((to - from) / step + 1e-9).floor();
    if !count.is_finite() || count < 0.0 {
        return Vec::new();
    }
    (0..=count as usize)
        .map(|i| from + i as f64 * step)
        .collect()
}

/// 1, 2 or 5 times a power of ten, near `rough`.
fn nice_step(rough: f64) -> f64 {
    if !(rough > 0.0 && rough.is_finite()) {
        return 1.0;
    }
    let power = 10f64.powf(rough.log10().floor());
    let mantissa = rough / power;
    let nice = if mantissa < 1.5 {
        1.0
    } else if mantissa < 3.5 {
        2.0
    } else if mantissa < 7.5 {
        5.0
    } else {
        10.0
    };
    nice * power
}

/// `value` with as many decimals as `step` needs.
fn number(value: f64, step: f64) -> String {
    let decimals = if step >= 1.0 && step.fract() == 0.0 {
        0
    } else {
        (-step.log10().floor()).max(0.0) as usize
    };
    // Rounding leaves -0.0 and 1e-15 behind; a label must say 0.
    let value = if value.abs() < step * 1e-6 {
        0.0
    } else {
        value
    };
    format!("{value:.decimals$}")
}

/// The time axis's unit, chosen by the soak's length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimeUnit {
    Seconds,
    Minutes,
    Hours,
}

impl TimeUnit {
    fn for_span(seconds: f64) -> Self {
        if seconds <= 120.0 {
            Self::Seconds
        } else if seconds <= 3.0 * 3600.0 {
            Self::Minutes
        } else {
            Self::Hours
        }
    }

    fn seconds(self) -> f64 {
        match self {
            Self::Seconds => 1.0,
            Self::Minutes => 60.0,
            Self::Hours => 3600.0,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Seconds => "s",
            Self::Minutes => "min",
            Self::Hours => "h",
        }
    }

    /// A tick step (in this unit) for a span (in this unit): a step a clock reader expects
    /// (15 min, 6 h), at most 8 ticks.
    fn step(self, span: f64) -> f64 {
        let steps: &[f64] = match self {
            Self::Seconds | Self::Minutes => &[1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0],
            Self::Hours => &[1.0, 2.0, 3.0, 6.0, 12.0, 24.0, 48.0, 72.0, 168.0],
        };
        if span < 4.0 {
            return nice_step(span / 5.0);
        }
        steps
            .iter()
            .copied()
            .find(|step| span / step <= 8.0)
            .unwrap_or_else(|| nice_step(span / 6.0))
    }

    /// A duration in seconds, for a human, in the unit that suits it.
    fn describe(seconds: f64) -> String {
        let unit = Self::for_span(seconds);
        let value = seconds / unit.seconds();
        let value = if value.fract().abs() < 1e-9 {
            format!("{value:.0}")
        } else {
            format!("{value:.1}")
        };
        format!("{value} {}", unit.name())
    }
}

/// A rate with three significant digits or so.
fn rate(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 100.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

fn signed_rate(value: f64) -> String {
    let text = rate(value);
    if text.starts_with('-') {
        text
    } else {
        format!("+{text}")
    }
}

/// At most [`MAX_POINTS`] of `samples`: in each of `MAX_POINTS / 2` runs of consecutive
/// samples, the lowest and the highest, in time order. Unlike taking every n-th sample, this
/// keeps the spikes, which are what a reader looks for.
pub(crate) fn thin(samples: &[(f64, f64)]) -> Vec<(f64, f64)> {
    if samples.len() <= MAX_POINTS {
        return samples.to_vec();
    }
    let buckets = MAX_POINTS / 2;
    let mut out = Vec::with_capacity(MAX_POINTS);
    for bucket in 0..buckets {
        let start = bucket * samples.len() / buckets;
        let end = (bucket + 1) * samples.len() / buckets;
        let run = &samples[start..end];
        let (mut low, mut high) = (0, 0);
        for (i, s) in run.iter().enumerate() {
            if s.1 < run[low].1 {
                low = i;
            }
            if s.1 > run[high].1 {
                high = i;
            }
        }
        out.push(run[low.min(high)]);
        if low != high {
            out.push(run[low.max(high)]);
        }
    }
    out
}

/// `text` made safe for XML text and attribute values. Characters XML 1.0 forbids (control
/// characters other than tab and line breaks) become U+FFFD.
/// `text` in lines of at most `width` characters, broken at spaces; the lines after the
/// first are indented as far as the first, and four more, so a wrapped note reads as one. A
/// word longer than a line is cut.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let words = text.trim_start();
    let lead = &text[..text.len() - words.len()];
    // At most half a line, so cutting a long word always gets on.
    let more: String = format!("{lead}    ").chars().take(width / 2).collect();
    let mut lines: Vec<String> = Vec::new();
    let mut line = lead.to_owned();
    let mut empty = true;
    for word in words.split(' ').filter(|w| !w.is_empty()) {
        let needed = line.chars().count() + usize::from(!empty) + word.chars().count();
        if !empty && needed > width {
            lines.push(std::mem::replace(&mut line, more.clone()));
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
        while line.chars().count() > width {
            let cut: String = line.chars().take(width).collect();
            let rest: String = line.chars().skip(width).collect();
            lines.push(cut);
            line = format!("{more}{rest}");
        }
    }
    lines.push(line);
    lines
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use quick_xml::events::Event;
    use quick_xml::{Reader, XmlVersion};

    /// Parses `svg` as XML: one `svg` root, end tags matching, attributes quoted and unique,
    /// every `&` one of XML's five entities or a character reference.
    fn assert_well_formed(svg: &str) {
        let mut reader = Reader::from_str(svg);
        let mut depth = 0usize;
        let mut roots = Vec::new();
        loop {
            let event = reader
                .read_event()
                .unwrap_or_else(|e| panic!("not XML at {}: {e}", reader.buffer_position()));
            match event {
                Event::Start(ref e) | Event::Empty(ref e) => {
                    if depth == 0 {
                        roots.push(String::from_utf8(e.name().as_ref().to_vec()).unwrap());
                    }
                    for attribute in e.attributes() {
                        attribute
                            .unwrap()
                            .normalized_value(XmlVersion::Implicit1_0)
                            .unwrap();
                    }
                    if matches!(event, Event::Start(_)) {
                        depth += 1;
                    }
                }
                Event::End(_) => depth -= 1,
                Event::GeneralRef(r) => {
                    let name = String::from_utf8(r.to_vec()).unwrap();
                    assert!(
                        ["amp", "lt", "gt", "quot", "apos"].contains(&name.as_str())
                            || name.starts_with('#'),
                        "unknown entity &{name};"
                    );
                }
                Event::Eof => break,
                _ => {}
            }
        }
        assert_eq!(depth, 0);
        assert_eq!(roots, ["svg"]);
    }

    /// How many points the judged samples' line has.
    fn polyline_points(svg: &str) -> usize {
        let marker = "<polyline class=\"samples\" points=\"";
        let start = svg.find(marker).expect("a polyline") + marker.len();
        let end = start + svg[start..].find('"').unwrap();
        svg[start..end].split(' ').count()
    }

    /// A soak of `hours` sampled every 10 s: a warm-up climb, then a steady leak with noise.
    fn soak(hours: f64, leak_mb_per_day: f64) -> Vec<(f64, f64)> {
        let mut seed: u64 = 0x5eed;
        let n = (hours * 360.0) as usize;
        (0..=n)
            .map(|i| {
                let t = i as f64 * 10.0;
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let noise = ((seed >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 3.0;
                let sawtooth = (t % 900.0) / 900.0 * 2.0;
                let warm = 120.0 - 80.0 * (-t / 400.0).exp();
                (
                    t,
                    warm + leak_mb_per_day * t / SECONDS_PER_DAY + sawtooth + noise,
                )
            })
            .collect()
    }

    /// Least squares over the samples from `from` seconds on.
    fn fit(samples: &[(f64, f64)], from: f64) -> (f64, f64) {
        let points: Vec<_> = samples.iter().filter(|s| s.0 >= from).collect();
        let n = points.len() as f64;
        let mean_t = points.iter().map(|s| s.0).sum::<f64>() / n;
        let mean_mb = points.iter().map(|s| s.1).sum::<f64>() / n;
        let covariance: f64 = points
            .iter()
            .map(|s| (s.0 - mean_t) * (s.1 - mean_mb))
            .sum();
        let variance: f64 = points.iter().map(|s| (s.0 - mean_t).powi(2)).sum();
        let slope = covariance / variance;
        (slope, mean_mb - slope * mean_t)
    }

    /// Marks inside the soak are drawn with their text escaped and counted in the legend; one
    /// outside the samples' time span, or at a time that is not a number, is left out.
    #[test]
    fn marks_inside_the_soak_are_drawn_and_the_rest_left_out() {
        let samples = soak(1.0, 0.0);
        let marks = [
            (600.0, "fault: proxy down on kafka <all> & more".to_owned()),
            (1200.0, "fault: proxy up on kafka".to_owned()),
            (99_999.0, "after the soak".to_owned()),
            (f64::NAN, "never".to_owned()),
        ];
        let svg = svg_with_marks(&samples, None, 10.0, 300.0, "marks", &[], &marks);
        assert_well_formed(&svg);
        assert!(
            svg.contains("<title>fault: proxy down on kafka &lt;all&gt; &amp; more</title>"),
            "{svg}"
        );
        assert_eq!(svg.matches(MARK_COLOUR).count(), 3, "2 marks + the legend");
        assert!(svg.contains("events (2)"));
        assert!(!svg.contains("after the soak") && !svg.contains("never"));
        let none = svg_with_marks(&samples, None, 10.0, 300.0, "marks", &[], &[]);
        assert!(!none.contains(MARK_COLOUR) && !none.contains("events ("));
    }

    #[test]
    fn plot_is_well_formed_xml_with_legend_and_escaped_text() {
        let samples = soak(2.0, 40.0);
        let trend = fit(&samples, 1800.0);
        let svg = svg(
            &samples,
            Some(trend),
            10.0,
            1800.0,
            "leak & <growth> \"soak\" 'a'\u{7}",
            &["verdict: FAIL, 40 MB/day > 10 MB/day & rising".into()],
        );
        assert_well_formed(&svg);
        assert_eq!(svg.matches("<svg").count(), 1);
        assert_eq!(svg.matches("</svg>").count(), 1);
        assert!(svg.contains("leak &amp; &lt;growth&gt; &quot;soak&quot; &apos;a&apos;\u{fffd}"));
        assert!(svg.contains("40 MB/day &gt; 10 MB/day &amp; rising"));
        for entry in [
            ">samples<",
            ">warm-up (30 min)<",
            ">trend +",
            ">threshold 10.0 MB/day<",
        ] {
            assert!(svg.contains(entry), "legend lacks {entry}");
        }
        assert!(svg.contains("time since start (min)"));
        let judged = samples.iter().filter(|s| s.0 >= 1800.0).count();
        assert_eq!(polyline_points(&svg), judged);
    }

    #[test]
    fn long_soak_is_thinned_to_at_most_max_points() {
        let samples = soak(30.0, 5.0);
        assert_eq!(samples.len(), 10_801);
        let svg = svg(&samples, None, 10.0, 0.0, "long", &[]);
        assert_well_formed(&svg);
        assert_eq!(polyline_points(&svg), MAX_POINTS);
        assert!(svg.contains("time since start (h)"));
        // No trend: neither a trend nor a threshold line, nor their legend entries.
        assert!(!svg.contains(">trend") && !svg.contains(">threshold"));
        assert!(!svg.contains("warm-up"));
    }

    #[test]
    fn thinning_keeps_each_runs_extremes_in_order() {
        let samples: Vec<(f64, f64)> = (0..4000)
            .map(|i| {
                let mb = if i == 1234 {
                    500.0
                } else {
                    f64::from(i * 7 % 13)
                };
                (f64::from(i), mb)
            })
            .collect();
        let thinned = thin(&samples);
        assert_eq!(thinned.len(), MAX_POINTS);
        assert!(thinned.contains(&(1234.0, 500.0)), "the spike survives");
        assert!(thinned.windows(2).all(|w| w[0].0 < w[1].0));
        // A flat run has one extreme: one point for it.
        let flat = vec![(0.0, 1.0); 3000];
        assert_eq!(thin(&flat).len(), MAX_POINTS / 2);
        assert_eq!(thin(&samples[..1500]).len(), 1500);
    }

    #[test]
    fn empty_samples_give_a_valid_svg_saying_no_samples() {
        let notes = ["verdict: no data".to_owned()];
        for samples in [&[][..], &[(f64::NAN, 1.0)][..]] {
            let svg = svg(samples, Some((0.0, 1.0)), 10.0, 60.0, "empty", &notes);
            assert_well_formed(&svg);
            assert!(svg.contains(">no samples<"));
            assert!(svg.contains(">verdict: no data<"));
            assert!(!svg.contains("<polyline"));
        }
    }

    #[test]
    fn one_sample_or_a_flat_line_still_draws() {
        for samples in [vec![(0.0, 50.0)], vec![(0.0, 50.0), (60.0, 50.0)]] {
            let svg = svg(&samples, Some((0.0, 50.0)), 10.0, 0.0, "flat", &[]);
            assert_well_formed(&svg);
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        }
    }

    #[test]
    fn time_unit_follows_the_span() {
        assert_eq!(TimeUnit::for_span(90.0), TimeUnit::Seconds);
        assert_eq!(TimeUnit::for_span(45.0 * 60.0), TimeUnit::Minutes);
        assert_eq!(TimeUnit::for_span(6.0 * 3600.0), TimeUnit::Hours);
        let (axis, _) = Axis::time(0.0, 6.0 * 3600.0);
        assert_eq!(axis.labels, ["0", "1", "2", "3", "4", "5", "6"]);
        let (axis, _) = Axis::time(0.0, 45.0 * 60.0);
        assert_eq!(axis.labels, ["0", "10", "20", "30", "40"]);
        let axis = Axis::megabytes(98.3, 131.9);
        assert!(axis.min <= 98.3 && axis.max >= 131.9);
        assert_eq!(axis.labels.first().unwrap(), &number(axis.min, 5.0));
    }

    #[test]
    fn same_inputs_give_the_same_bytes() {
        let samples = soak(1.0, 20.0);
        let draw = || svg(&samples, Some(fit(&samples, 600.0)), 10.0, 600.0, "t", &[]);
        assert_eq!(draw(), draw());
    }

    /// Writes an example plot (a 6-hour soak leaking 40 MB/day against a 10 MB/day threshold)
    /// to the temporary directory, to look at: `rsvg-convert -o plot.png soak-plot-example.svg`.
    #[test]
    fn example_plot_is_written() {
        let samples = soak(6.0, 40.0);
        let warmup = 1800.0;
        let trend = fit(&samples, warmup);
        let notes = [
            format!(
                "verdict: FAIL: anonymous memory grows {:.1} MB/day after warm-up, over the \
                 10 MB/day threshold",
                trend.0 * SECONDS_PER_DAY
            ),
            format!("{} samples every 10 s, pid 4242, 0 faults", samples.len()),
        ];
        let svg = svg(
            &samples,
            Some(trend),
            10.0,
            warmup,
            "event-pipeline soak: anonymous memory",
            &notes,
        );
        assert_well_formed(&svg);
        let path = std::env::temp_dir().join("soak-plot-example.svg");
        std::fs::write(&path, svg).unwrap();
    }

    /// The y coordinates of a polyline's points, by its class.
    fn ys(svg: &str, class: &str) -> Vec<f64> {
        let marker = format!("<polyline class=\"{class}\" points=\"");
        let start = svg.find(&marker).expect("the polyline") + marker.len();
        let end = start + svg[start..].find('"').unwrap();
        svg[start..end]
            .split(' ')
            .map(|p| p.split(',').nth(1).unwrap().parse().unwrap())
            .collect()
    }

    /// The plot that hid a leak: 30 minutes of 60 MB/day, the judged samples from 24 to
    /// 25.6 MB after a warm-up climbing from 2 MB, its verdict a long line. The frame fits
    /// what was judged (the rise spans most of its height, not a twentieth), the samples are
    /// drawn over the trend, and every note line fits the width.
    fn hidden_leak() -> (String, Vec<(f64, f64)>) {
        let warmup = 300.0;
        let samples: Vec<(f64, f64)> = (0..=180)
            .map(|i| {
                let t = i as f64 * 10.0;
                let mb = match t < warmup {
                    true => 2.0 + 22.0 * t / warmup,
                    false => 24.0 + 60.0 * (t - warmup) / SECONDS_PER_DAY + (i % 3) as f64 * 0.05,
                };
                (t, mb)
            })
            .collect();
        let trend = fit(&samples, warmup);
        let notes = [
            "memory_flat: anonymous memory grows 60.4 MB/day after the warm-up (r² 0.99, 150 \
             samples over 25 min), over the 10 MB/day threshold: the leak is steady, not a step \
             after a fault, and the allocator's own holdings did not grow with it"
                .to_owned(),
            "    the heap: grows 58.2 MB/day".to_owned(),
        ];
        let svg = svg(&samples, Some(trend), 10.0, warmup, "soak: leak", &notes);
        (svg, samples)
    }

    #[test]
    fn the_frame_fits_the_judged_samples_and_the_warm_up_may_leave_it() {
        let (svg, _) = hidden_leak();
        assert_well_formed(&svg);
        let judged = ys(&svg, "samples");
        let (top, bottom) = judged
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| {
                (lo.min(*y), hi.max(*y))
            });
        assert!(
            bottom - top >= 0.5 * (PLOT_BOTTOM - PLOT_TOP),
            "the judged rise spans {:.0} of {} px",
            bottom - top,
            PLOT_BOTTOM - PLOT_TOP
        );
        // The warm-up's climb starts far below the frame.
        assert!(ys(&svg, "warm-up").iter().any(|y| *y > PLOT_BOTTOM));
    }

    #[test]
    fn the_samples_are_drawn_over_the_trend_and_the_threshold() {
        let (svg, _) = hidden_leak();
        let samples = svg.find("class=\"samples\"").unwrap();
        for line in [TREND_COLOUR, THRESHOLD_COLOUR] {
            let at = svg
                .find(&format!("stroke=\"{line}\" stroke-width"))
                .unwrap();
            assert!(at < samples, "{line} is drawn over the samples");
        }
    }

    #[test]
    fn long_notes_wrap_inside_the_width() {
        let (svg, _) = hidden_leak();
        let notes: Vec<&str> = svg
            .lines()
            .filter(|l| l.starts_with("<text x=\"24\""))
            .collect();
        assert!(notes.len() >= 3, "the long note is wrapped: {notes:?}");
        for line in &notes {
            let text = &line[line.find('>').unwrap() + 1..line.rfind("</text>").unwrap()];
            let width = 24.0 + text.chars().count() as f64 * CHAR_WIDTH;
            assert!(width <= WIDTH, "{text:?} is {width} px wide");
        }
        assert!(
            notes[1].contains(">    "),
            "a continuation is indented: {notes:?}"
        );
        assert_eq!(
            wrap("  abc defghijklmno", 12),
            ["  abc", "      defghi", "      jklmno"]
        );
        assert_eq!(wrap("abcdef", 1), ["a", "b", "c", "d", "e", "f"]);
        let path = std::env::temp_dir().join("soak-plot-hidden-leak.svg");
        std::fs::write(&path, svg).unwrap();
    }
}
