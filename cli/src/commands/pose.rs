//! `diffuse pose`: object pose from point clouds (SE(3) diffusion registration) and its synthetic benchmark.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use diffuse_core::batch::{ListEntry, Progress, Status};
use diffuse_pose::bench::{self, BenchConfig, CaseResult, Method, Summary};
use diffuse_pose::category::baseline::pca_box;
use diffuse_pose::category::bench::{self as category_bench, CategoryBenchConfig};
use diffuse_pose::category::{CATEGORIES, Category};
use diffuse_pose::ply::{self, PlyEncoding};
use diffuse_pose::registration::{self, Dof, Estimate, EstimateConfig, IcpSurrogate};
use diffuse_pose::{PointCloud, se3, shapes};

use super::Context;
use super::manifest::{BatchArgs, BatchRun};

/// Surface samples taken from a mesh object model.
const MODEL_SAMPLES: usize = 4000;

/// The pose subcommands.
#[derive(Debug, Subcommand)]
pub enum PoseCommand {
    /// Estimate the pose of a known object in a scan (object → scene).
    Estimate(EstimateArgs),
    /// Run the synthetic benchmark: random full rotations, partial views, noise and outliers.
    Bench(BenchArgs),
}

/// Settings of the reverse process shared by `estimate` and `bench`.
#[derive(Debug, Args, Clone)]
pub struct ProcessArgs {
    /// Initial rotations (hypotheses) run through the reverse process in parallel.
    #[arg(long, default_value_t = EstimateConfig::default().hypotheses, value_name = "N")]
    pub hypotheses: usize,
    /// Reverse-process steps per hypothesis (surrogate calls).
    #[arg(long, default_value_t = EstimateConfig::default().steps, value_name = "N")]
    pub steps: usize,
    /// Degrees of freedom: 6 (rigid), 7 (rigid and one uniform scale of the model) or 9 (a scale per axis of
    /// the model's own frame): scene ≈ R·diag(s)·model + t.
    #[arg(long, default_value = "6", value_name = "6|7|9")]
    pub dof: Dof,
}

/// Arguments of `diffuse pose estimate`.
#[derive(Debug, Args)]
pub struct EstimateArgs {
    /// The scan (PLY), ideally cropped to the object; or a folder of scans (batch mode: needs -o OUTDIR).
    #[arg(value_name = "SCENE.ply|DIR", required_unless_present = "list")]
    pub scene: Option<PathBuf>,
    /// The object model (PLY point cloud or mesh) whose pose is wanted.
    #[arg(long, value_name = "MODEL.ply")]
    pub object: Option<PathBuf>,
    /// No model: estimate the pose and size of an object of this category (bottle, bowl, can, mug, box, laptop)
    /// standing on a table in the scan (metres, sensor at --viewpoint, default 0,0,0). For now with the PCA-box
    /// baseline (docs/pose.md, "Category level"); -o writes the box as a PLY mesh.
    #[arg(long, value_name = "NAME", conflicts_with = "object")]
    pub category: Option<String>,
    /// Write the object moved into the scene, coloured by how well the scan supports it. In batch mode (a
    /// folder of scenes or --list) the output folder, which receives `<stem>.json` (what --json prints) and
    /// `<stem>_aligned.ply` per scene.
    #[arg(short, long, value_name = "aligned.ply|OUTDIR")]
    pub output: Option<PathBuf>,
    /// Overwrite the output file if it exists.
    #[arg(long)]
    pub force: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Where the sensor was, in scene coordinates, if the scan is a single view (a depth camera's scan in its
    /// own frame: 0,0,0). Lets the estimator rule out poses that put object surface where the sensor saw
    /// through.
    #[arg(long, value_name = "X,Y,Z", value_parser = parse_point, allow_hyphen_values = true)]
    pub viewpoint: Option<[f64; 3]>,
    /// Reverse-process settings.
    #[command(flatten)]
    pub process: ProcessArgs,
    /// Batches on a cluster: --list, --shard, --manifest, --resume (docs/scale-out.md).
    #[command(flatten)]
    pub batch: BatchArgs,
}

fn parse_point(s: &str) -> Result<[f64; 3], String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|x| x.trim().parse::<f64>().map_err(|_| format!("'{x}' is not a number")))
        .collect::<Result<_, _>>()?;
    match v[..] {
        [x, y, z] if v.iter().all(|c| c.is_finite()) => Ok([x, y, z]),
        _ => Err(format!("expected three finite numbers X,Y,Z, got '{s}'")),
    }
}

/// Arguments of `diffuse pose bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Objects to use (comma separated): bunny, box, cylinder, l-shape, mug.
    #[arg(long, value_delimiter = ',', default_values_t = shapes::BUILTIN.map(String::from))]
    pub objects: Vec<String>,
    /// Cases per object.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub cases: usize,
    /// Points per scan.
    #[arg(long, default_value_t = 2000, value_name = "N")]
    pub points: usize,
    /// Skip the baselines (ICP from the identity; with --dof 7|9 the two 6-DoF estimators).
    #[arg(long)]
    pub no_baseline: bool,
    /// Run the category-level benchmark instead, on held-out procedural instances of these categories (comma
    /// separated: bottle, bowl, can, mug, box, laptop; `all` for every one), scored with the NOCS measures.
    #[arg(long, value_delimiter = ',', value_name = "NAME,...", conflicts_with = "objects")]
    pub category: Vec<String>,
    /// Print per-case results and the summaries as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write each case's scan and true pose (case-NNN-OBJECT.ply/.json) and the object meshes into DIR.
    #[arg(long, value_name = "DIR")]
    pub save_cases: Option<PathBuf>,
    /// Overwrite files in --save-cases.
    #[arg(long)]
    pub force: bool,
    /// Reverse-process settings.
    #[command(flatten)]
    pub process: ProcessArgs,
}

/// Runs a pose subcommand.
pub fn run(ctx: &Context, cmd: &PoseCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PoseCommand::Estimate(a) => estimate(ctx, a),
        PoseCommand::Bench(a) => run_bench(ctx, a),
    }
}

/// `base` with the process flags and global seed/threads applied.
fn estimate_config(ctx: &Context, p: &ProcessArgs, base: EstimateConfig) -> anyhow::Result<EstimateConfig> {
    anyhow::ensure!(p.hypotheses >= 1, "--hypotheses must be at least 1");
    anyhow::ensure!(p.steps >= 1, "--steps must be at least 1");
    Ok(EstimateConfig {
        hypotheses: p.hypotheses,
        steps: p.steps,
        dof: p.dof,
        seed: ctx.global.seed,
        threads: ctx.global.threads.unwrap_or(0),
        ..base
    })
}

fn refuse_overwrite(path: &Path, force: bool) -> anyhow::Result<()> {
    if path.exists() && !force {
        bail!("{} exists; pass --force to overwrite it", path.display());
    }
    Ok(())
}

fn estimate(ctx: &Context, args: &EstimateArgs) -> anyhow::Result<ExitCode> {
    if let Some(category) = &args.category {
        return estimate_category(ctx, args, category);
    }
    let Some(object_path) = &args.object else {
        if args.process.dof != Dof::Rigid {
            bail!("--dof {} scales a known model to the scan: pass it with --object MODEL.ply", args.process.dof);
        }
        bail!(
            "estimating a pose needs the object's model (--object MODEL.ply) or its category (--category NAME, one of \
             bottle, bowl, can, mug, box, laptop): diffuse pose estimate {} --object MODEL.ply",
            args.scene.as_deref().unwrap_or(Path::new("SCENE.ply")).display()
        );
    };
    diffuse_core::io::protect_input(object_path);
    let scene_path = match &args.scene {
        Some(scene) if !scene.is_dir() && !args.batch.is_batch() => scene,
        _ => return estimate_batch(ctx, args, object_path),
    };
    diffuse_core::io::protect_input(scene_path);
    if let Some(out) = &args.output {
        diffuse_core::io::check_output(out, args.force)?;
        diffuse_core::io::check_writable_folder(out)?;
    }
    let cfg = estimate_config(ctx, &args.process, base_config(args))?;
    let scene = ply::read_ply(scene_path)?.cloud;
    let scene_name = scene_path.display().to_string();
    scene.validate(&scene_name, registration::MIN_POINTS)?;
    let (object_data, object) = load_object(object_path, cfg.seed)?;
    ctx.printer.verbose(format!(
        "scene {} points, object {} points{}",
        scene.len(),
        object.len(),
        if object_data.triangles.is_empty() { String::new() } else { " (sampled from its mesh)".into() }
    ));

    let object_name = object_path.display().to_string();
    let est = registration::estimate_pose(&object, &scene, &cfg, &IcpSurrogate::default())
        .with_context(|| format!("estimating the pose of {object_name} in {scene_name}"))?;
    for w in &est.warnings {
        ctx.printer.warn(w);
    }

    if let Some(out) = &args.output {
        write_aligned(out, &object_data, &scene, &est, args.force)?;
        ctx.printer.info(format!("wrote {}", out.display()));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&estimate_json(&est))?);
    } else {
        print_estimate(&est);
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes every category case's scan (`case-NNN-CATEGORY.ply`) and its truth (`.json`: pose canonical → camera,
/// size, box corners) and the true box (`case-NNN-CATEGORY-box.ply`) into `dir`.
fn save_category_cases(ctx: &Context, cfg: &CategoryBenchConfig, dir: &Path, force: bool) -> anyhow::Result<()> {
    use diffuse_pose::category::{metrics::SizedPose, scene, shapes};
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (ci, &category) in cfg.categories.iter().enumerate() {
        for c in 0..cfg.cases {
            let index = ci * cfg.cases + c;
            let inst = shapes::instance(category, shapes::TEST_SEEDS + index as u64);
            let case = scene::make_scene(&inst, diffuse_core::seed::sample_seed(cfg.seed, index as u64), &cfg.scene)?;
            let stem = format!("case-{index:03}-{category}");
            let (scan, truth, boxed) = (
                dir.join(format!("{stem}.ply")),
                dir.join(format!("{stem}.json")),
                dir.join(format!("{stem}-box.ply")),
            );
            for p in [&scan, &truth, &boxed] {
                refuse_overwrite(p, force)?;
            }
            ply::write_ply(&scan, &case.scan, &[], PlyEncoding::BinaryLittleEndian)?;
            let sized = SizedPose { pose: case.truth, size: case.size };
            let mesh = sized.box_mesh();
            ply::write_ply(
                &boxed,
                &PointCloud::new(mesh.vertices.clone()),
                &mesh.triangles,
                PlyEncoding::BinaryLittleEndian,
            )?;
            let corners: Vec<[f64; 3]> = sized.corners().iter().map(|p| [p.x, p.y, p.z]).collect();
            let json = serde_json::json!({
                "scene": format!("{stem}.ply"),
                "category": category,
                "pose": se3::matrix_rows(&case.truth),
                "size": [case.size.x, case.size.y, case.size.z],
                "corners": corners,
                "viewpoint": [0.0, 0.0, 0.0],
                "handle_visible": case.handle_visible,
            });
            let text = serde_json::to_string_pretty(&json)? + "\n";
            ply::write_atomically(&truth, |w| std::io::Write::write_all(w, text.as_bytes()))?;
        }
    }
    ctx.printer.info(format!("wrote {} cases to {}", cfg.categories.len() * cfg.cases, dir.display()));
    Ok(())
}

/// `pose estimate SCENE --category NAME`: pose and size of an unseen object of a known category.
fn estimate_category(ctx: &Context, args: &EstimateArgs, name: &str) -> anyhow::Result<ExitCode> {
    let category: Category = name.parse().context("--category")?;
    anyhow::ensure!(
        args.process.dof == Dof::Rigid,
        "--category estimates the size itself; --dof applies to an --object template"
    );
    let scene_path = match &args.scene {
        Some(scene) if !scene.is_dir() && !args.batch.is_batch() => scene,
        _ => bail!("--category takes one scan (a PLY file); batches run with --object only"),
    };
    diffuse_core::io::protect_input(scene_path);
    if let Some(out) = &args.output {
        diffuse_core::io::check_output(out, args.force)?;
        diffuse_core::io::check_writable_folder(out)?;
    }
    let scene = ply::read_ply(scene_path)?.cloud;
    let scene_name = scene_path.display().to_string();
    scene.validate(&scene_name, registration::MIN_POINTS)?;
    let viewpoint = args
        .viewpoint
        .map_or(diffuse_pose::nalgebra::Point3::origin(), |[x, y, z]| diffuse_pose::nalgebra::Point3::new(x, y, z));
    let start = Instant::now();
    let est = pca_box(&scene, &viewpoint, category, ctx.global.seed)
        .with_context(|| format!("estimating the {category} in {scene_name}"))?;
    let time_ms = start.elapsed().as_secs_f64() * 1e3;
    if let Some(out) = &args.output {
        let mesh = est.box_mesh();
        let cloud = PointCloud::new(mesh.vertices.clone());
        ply::write_ply_new(out, &cloud, &mesh.triangles, PlyEncoding::BinaryLittleEndian, args.force)?;
        ctx.printer.info(format!("wrote {} (the box, to open next to the scan)", out.display()));
    }
    let corners: Vec<[f64; 3]> = est.corners().iter().map(|p| [p.x, p.y, p.z]).collect();
    if args.json {
        let json = serde_json::json!({
            "category": category,
            "estimator": "pca-box",
            "pose": se3::matrix_rows(&est.pose),
            "size": [est.size.x, est.size.y, est.size.z],
            "corners": corners,
            "time_ms": time_ms,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        println!("{category} (pca-box estimator): pose (canonical → scene; +y up, origin at the box centre):");
        for row in se3::matrix_rows(&est.pose) {
            println!("  {:>12.6} {:>12.6} {:>12.6} {:>12.6}", row[0], row[1], row[2], row[3]);
        }
        println!(
            "size         [{:.4}, {:.4}, {:.4}]  w, h, d of the tight box (scene units)",
            est.size.x, est.size.y, est.size.z
        );
        println!("time         {time_ms:.1} ms");
    }
    Ok(ExitCode::SUCCESS)
}

/// The estimator's defaults with the sensor viewpoint of `args`.
fn base_config(args: &EstimateArgs) -> EstimateConfig {
    EstimateConfig {
        viewpoint: args.viewpoint.map(|[x, y, z]| diffuse_pose::nalgebra::Point3::new(x, y, z)),
        ..EstimateConfig::default()
    }
}

/// The object model as read and the point cloud the estimator registers (sampled from a mesh), validated.
fn load_object(path: &Path, seed: u64) -> anyhow::Result<(ply::PlyData, PointCloud)> {
    let object_data = ply::read_ply(path)?;
    let object_name = path.display().to_string();
    let object = object_data.model_cloud(&object_name, MODEL_SAMPLES, seed)?;
    object.validate(&object_name, registration::MIN_POINTS)?;
    Ok((object_data, object))
}

/// The model as given (mesh faces kept), moved into the scene and coloured by support, written to `out`.
fn write_aligned(
    out: &Path,
    object_data: &ply::PlyData,
    scene: &PointCloud,
    est: &Estimate,
    force: bool,
) -> anyhow::Result<()> {
    let mut moved = object_data.cloud.scaled(&est.scale).transformed(&est.pose);
    moved.colors = Some(moved.support_colours(scene, est.inlier_distance)?);
    ply::write_ply_new(out, &moved, &object_data.triangles, PlyEncoding::BinaryLittleEndian, force)?;
    Ok(())
}

/// One scene of a batch and its two outputs; the JSON is written last and marks the scene as done.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SceneJob {
    input: PathBuf,
    json: PathBuf,
    aligned: PathBuf,
}

/// The scenes of a batch: the .ply files of a folder (not recursive) and the lines of --list.
fn plan_scenes(args: &EstimateArgs, out_dir: &Path) -> anyhow::Result<Vec<SceneJob>> {
    let mut entries = args.batch.listed()?;
    if let Some(scene) = &args.scene {
        if scene.is_dir() {
            let read = std::fs::read_dir(scene).with_context(|| format!("reading {}", scene.display()))?;
            for e in read {
                let path = e.with_context(|| format!("reading {}", scene.display()))?.path();
                let is_ply = path.extension().is_some_and(|x| x.eq_ignore_ascii_case("ply"));
                if is_ply && path.is_file() {
                    entries.push(ListEntry { relative: PathBuf::from(path.file_name().unwrap_or_default()), path });
                }
            }
        } else {
            entries.push(ListEntry {
                relative: PathBuf::from(scene.file_name().unwrap_or_default()),
                path: scene.clone(),
            });
        }
    }
    entries.sort();
    entries.dedup();
    let mut jobs = Vec::new();
    let mut seen: std::collections::HashMap<PathBuf, PathBuf> = std::collections::HashMap::new();
    for e in entries {
        if !e.path.is_file() {
            bail!("{}: no such scene file", e.path.display());
        }
        let json = out_dir.join(&e.relative).with_extension("json");
        let stem = e.relative.file_stem().unwrap_or_default().to_string_lossy().into_owned();
        let aligned = json.with_file_name(format!("{stem}_aligned.ply"));
        if let Some(other) = seen.insert(json.clone(), e.path.clone()) {
            bail!("{} and {} would both be written to {}", other.display(), e.path.display(), json.display());
        }
        jobs.push(SceneJob { input: e.path, json, aligned });
    }
    if jobs.is_empty() {
        bail!(
            "no .ply scenes found{}",
            args.scene.as_ref().map(|s| format!(" in {}", s.display())).unwrap_or_default()
        );
    }
    Ok(jobs)
}

/// Batch mode: every scene of a folder or list (this shard's part), one JSON estimate and aligned PLY each,
/// recorded in the manifest; a failed scene is recorded and the batch goes on (exit code 1 at the end).
fn estimate_batch(ctx: &Context, args: &EstimateArgs, object_path: &Path) -> anyhow::Result<ExitCode> {
    let p = &ctx.printer;
    let Some(out_dir) = &args.output else {
        bail!("a batch of scenes (a folder or --list) needs an output folder: pass -o OUTDIR");
    };
    if out_dir.is_file() {
        bail!("{}: the output of a batch must be a folder, not a file", out_dir.display());
    }
    if args.json {
        p.warn("--json is implied in batch mode: each scene's estimate goes to OUTDIR/<stem>.json");
    }
    let all = plan_scenes(args, out_dir)?;
    for job in &all {
        diffuse_core::io::protect_input(&job.input);
    }
    let mut run = BatchRun::open(ctx, &args.batch, out_dir, args.force)?;
    let total = all.len();
    let jobs = run.select(all);
    if run.shard().count > 1 {
        p.info(format!("shard {}: {} of {total} scene{}", run.shard(), jobs.len(), if total == 1 { "" } else { "s" }));
    }
    let cfg = estimate_config(ctx, &args.process, base_config(args))?;
    let (object_data, object) = load_object(object_path, cfg.seed)?;
    let object_name = object_path.display().to_string();

    let bar = p.progress(jobs.len() as u64, "pose");
    let start = Instant::now();
    let (mut done, mut skipped, mut resumed) = (0usize, 0usize, 0usize);
    let mut failures: Vec<(PathBuf, String)> = Vec::new();
    for job in &jobs {
        bar.inc(1);
        if let Progress::Complete = run.is_done(&job.input, &job.json) {
            resumed += 1;
            continue;
        }
        if let Some(existing) = [&job.json, &job.aligned].into_iter().find(|o| o.exists())
            && !args.force
        {
            skipped += 1;
            p.info(format!(
                "skipping {}: {} exists (use --force to overwrite)",
                job.input.display(),
                existing.display()
            ));
            let why = format!("{} exists and was not recorded as done (use --force to redo it)", existing.display());
            run.record(&job.input, &job.json, Status::Skipped, Some(why), 0.0)?;
            continue;
        }
        let t = Instant::now();
        let result = (|| -> anyhow::Result<Estimate> {
            let scene = ply::read_ply(&job.input)?.cloud;
            let scene_name = job.input.display().to_string();
            scene.validate(&scene_name, registration::MIN_POINTS)?;
            let est = registration::estimate_pose(&object, &scene, &cfg, &IcpSurrogate::default())
                .with_context(|| format!("estimating the pose of {object_name} in {scene_name}"))?;
            write_aligned(&job.aligned, &object_data, &scene, &est, args.force)?;
            let text = serde_json::to_string_pretty(&estimate_json(&est))? + "\n";
            diffuse_core::io::write_bytes_atomic(&job.json, args.force, text.as_bytes())?;
            Ok(est)
        })();
        let seconds = t.elapsed().as_secs_f64();
        match result {
            Ok(est) => {
                run.record(&job.input, &job.json, Status::Ok, None, seconds)?;
                done += 1;
                for w in &est.warnings {
                    p.warn(format!("{}: {w}", job.input.display()));
                }
                p.verbose(format!("{} -> {} (fitness {:.3})", job.input.display(), job.json.display(), est.fitness));
            }
            Err(e) => {
                let why = format!("{e:#}");
                run.record(&job.input, &job.json, Status::Failed, Some(why.clone()), seconds)?;
                failures.push((job.input.clone(), why));
            }
        }
    }
    bar.finish_and_clear();
    println!(
        "estimated {done} pose{} in {:.1} s{}{}",
        if done == 1 { "" } else { "s" },
        start.elapsed().as_secs_f64(),
        if resumed > 0 { format!("; {resumed} already done according to the manifest") } else { String::new() },
        if skipped > 0 { format!("; skipped {skipped} with existing outputs") } else { String::new() }
    );
    if failures.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("{} scene{} failed:", failures.len(), if failures.len() == 1 { "" } else { "s" });
    for (input, why) in &failures {
        let shown = input.display().to_string();
        if why.contains(&shown) { eprintln!("  {why}") } else { eprintln!("  {shown}: {why}") }
    }
    Ok(ExitCode::from(1))
}

fn estimate_json(est: &Estimate) -> serde_json::Value {
    let (axis, angle) = se3::axis_angle(&est.pose);
    let t = est.pose.translation.vector;
    let s = est.scale;
    serde_json::json!({
        "pose": se3::matrix_rows(&est.pose),
        "scale": [s.x, s.y, s.z],
        "dof": est.dof.count(),
        "translation": [t.x, t.y, t.z],
        "rotation": {
            "axis": [axis.x, axis.y, axis.z],
            "angle_deg": angle.to_degrees(),
            "quaternion_wxyz": se3::quaternion_wxyz(&est.pose),
        },
        "fitness": est.fitness,
        "inlier_rmse": est.inlier_rmse,
        "inlier_distance": est.inlier_distance,
        "object_diameter": est.object_diameter,
        "time_ms": est.timings.total_ms,
        "timings_ms": {
            "prepare": est.timings.prepare_ms,
            "hypotheses": est.timings.hypotheses_ms,
            "refine": est.timings.refine_ms,
        },
        "hypotheses": est.hypotheses,
        "steps": est.steps,
        "surrogate": est.surrogate,
        "candidates": est.candidates.iter().map(|c| serde_json::json!({
            "hypothesis": c.hypothesis,
            "score": c.score,
            "pose": se3::matrix_rows(&c.pose),
            "scale": [c.scale.x, c.scale.y, c.scale.z],
        })).collect::<Vec<_>>(),
        "warnings": est.warnings,
    })
}

fn print_estimate(est: &Estimate) {
    if est.dof == Dof::Rigid {
        println!("pose (object → scene):");
    } else {
        println!("pose (object → scene, rigid part: scene = R·diag(scale)·object + t):");
    }
    for row in se3::matrix_rows(&est.pose) {
        println!("  {:>12.6} {:>12.6} {:>12.6} {:>12.6}", row[0], row[1], row[2], row[3]);
    }
    let (axis, angle) = se3::axis_angle(&est.pose);
    let q = se3::quaternion_wxyz(&est.pose);
    let t = est.pose.translation.vector;
    println!("rotation     {:.3}° about [{:.4}, {:.4}, {:.4}]", angle.to_degrees(), axis.x, axis.y, axis.z);
    println!("quaternion   [w {:.6}, x {:.6}, y {:.6}, z {:.6}]", q[0], q[1], q[2], q[3]);
    println!("translation  [{:.6}, {:.6}, {:.6}]", t.x, t.y, t.z);
    if est.dof != Dof::Rigid {
        let s = est.scale;
        println!("scale        [{:.5}, {:.5}, {:.5}]  per axis of the object's frame ({} DoF)", s.x, s.y, s.z, est.dof);
    }
    println!(
        "fitness      {:.3} of scene points within {:.4} (3 % of the object diameter {:.4})",
        est.fitness, est.inlier_distance, est.object_diameter
    );
    println!("inlier RMSE  {:.5}", est.inlier_rmse);
    println!(
        "time         {:.0} ms ({} hypotheses × {} steps, {} surrogate)",
        est.timings.total_ms, est.hypotheses, est.steps, est.surrogate
    );
}

fn run_bench(ctx: &Context, args: &BenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.cases >= 1, "--cases must be at least 1");
    if !args.category.is_empty() {
        return run_category_bench(ctx, args);
    }
    for o in &args.objects {
        shapes::builtin(o).with_context(|| "--objects".to_string())?;
    }
    let cfg = BenchConfig {
        objects: args.objects.clone(),
        cases_per_object: args.cases,
        scan_points: args.points,
        seed: ctx.global.seed,
        estimate: estimate_config(ctx, &args.process, BenchConfig::default().estimate)?,
        baseline: !args.no_baseline,
        ..BenchConfig::default()
    };
    if let Some(dir) = &args.save_cases {
        save_cases(ctx, &cfg, dir, args.force)?;
    }
    let methods = match (cfg.baseline, cfg.estimate.dof) {
        (false, _) => 1,
        (true, Dof::Rigid) => 2,
        (true, _) => 3,
    };
    let bar = ctx.printer.progress((cfg.objects.len() * cfg.cases_per_object * methods) as u64, "pose bench");
    let mut on_result = |r: &CaseResult| {
        bar.inc(1);
        ctx.printer.verbose(format!(
            "{:<18} {:<9} case {:>3}: rotation {:>7.2}°, translation {:>6.3} %d, ADD-S {:>6.3} %d, scale {:>6.2} %, {:>6.1} ms{}",
            r.method.label(),
            r.object,
            r.index,
            r.errors.rotation_deg,
            100.0 * r.errors.translation,
            100.0 * r.errors.add_s,
            100.0 * r.errors.scale,
            r.time_ms,
            if r.success { "" } else { "  FAIL" }
        ));
    };
    let report = bench::run(&cfg, &IcpSurrogate::default(), &mut on_result)?;
    bar.finish_and_clear();
    let hidden: Vec<&CaseResult> =
        report.results.iter().filter(|r| r.method == Method::Diffusion && r.feature_visible == Some(false)).collect();
    if args.json {
        let cases: Vec<serde_json::Value> = report
            .results
            .iter()
            .map(|r| {
                serde_json::json!({
                    "object": r.object, "index": r.index, "method": r.method,
                    "rotation_deg": r.errors.rotation_deg, "translation": r.errors.translation,
                    "add": r.errors.add, "add_s": r.errors.add_s, "scale_error": r.errors.scale, "time_ms": r.time_ms,
                    "success": r.success, "feature_visible": r.feature_visible,
                })
            })
            .collect();
        let json = serde_json::json!({
            "config": {
                "objects": cfg.objects, "cases_per_object": cfg.cases_per_object, "scan_points": cfg.scan_points,
                "noise": cfg.noise, "outliers": cfg.outliers, "seed": cfg.seed,
                "hypotheses": cfg.estimate.hypotheses, "steps": cfg.estimate.steps,
                "rotation_threshold_deg": cfg.rotation_threshold_deg,
                "translation_threshold": cfg.translation_threshold,
                "dof": cfg.estimate.dof.count(),
                "scale_range": [cfg.scale_range.0, cfg.scale_range.1],
                "scale_threshold": cfg.scale_threshold,
                "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            },
            "summaries": report.summaries,
            "cases": cases,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print_summaries(&report.summaries, cfg.estimate.dof);
        if !hidden.is_empty() {
            let ok = hidden.iter().filter(|r| r.success).count();
            println!(
                "\nmug scans with the handle hidden (rotation about the axis unobservable): {} ({} succeeded anyway)",
                hidden.len(),
                ok
            );
        }
        println!(
            "\nsuccess: rotation error < {}° (symmetry-aware) and translation error < {} % of the diameter{}; \
             %d = percent of the object diameter",
            cfg.rotation_threshold_deg,
            100.0 * cfg.translation_threshold,
            if cfg.estimate.dof == Dof::Rigid {
                String::new()
            } else {
                format!(
                    " and every scale within {} % (objects stretched by {}–{} {})",
                    100.0 * cfg.scale_threshold,
                    cfg.scale_range.0,
                    cfg.scale_range.1,
                    if cfg.estimate.dof == Dof::Similarity { "uniformly" } else { "per axis" }
                )
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `pose bench --category`: the NOCS measures of the category-level estimators on held-out instances.
fn run_category_bench(ctx: &Context, args: &BenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.process.dof == Dof::Rigid,
        "--category estimates pose and size from the category alone; --dof applies to --objects templates"
    );
    let categories: Vec<Category> = if args.category.iter().any(|c| c == "all") {
        CATEGORIES.to_vec()
    } else {
        args.category.iter().map(|c| c.parse::<Category>()).collect::<Result<_, _>>().context("--category")?
    };
    let cfg = CategoryBenchConfig { categories, cases: args.cases, seed: ctx.global.seed, ..Default::default() };
    if let Some(dir) = &args.save_cases {
        save_category_cases(ctx, &cfg, dir, args.force)?;
    }
    let bar = ctx.printer.progress((cfg.categories.len() * cfg.cases) as u64, "pose bench --category");
    let report = category_bench::run(&cfg, &mut |r| {
        bar.inc(1);
        ctx.printer.verbose(format!(
            "{:<8} {:<7} case {:>3}: IoU {:>5.3}, rotation {:>6.2}°, translation {:>5.2} cm, {:>6.1} ms{}",
            r.method.label(),
            r.category,
            r.index,
            r.errors.iou,
            r.errors.rotation_deg,
            100.0 * r.errors.translation_m,
            r.time_ms,
            r.failure.as_deref().map(|f| format!("  failed: {f}")).unwrap_or_default()
        ));
    })?;
    bar.finish_and_clear();
    if args.json {
        let summaries: Vec<serde_json::Value> = report
            .summaries
            .iter()
            .map(|(m, c, s)| serde_json::json!({"method": m, "category": c, "summary": s}))
            .collect();
        let json = serde_json::json!({
            "config": {
                "categories": cfg.categories, "cases_per_category": cfg.cases, "seed": cfg.seed,
                "scan_points": cfg.scene.points, "noise_m": cfg.scene.noise, "outliers": cfg.scene.outliers,
            },
            "summaries": summaries,
            "cases": report.results,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<8} {:<8} {:>5} {:>6} {:>6} {:>6} {:>6} {:>7} {:>7} {:>8} {:>8} {:>7}",
        "method",
        "category",
        "cases",
        "IoU25",
        "IoU50",
        "5°2cm",
        "5°5cm",
        "10°2cm",
        "10°5cm",
        "rot °",
        "trans cm",
        "ms"
    );
    for (m, c, s) in &report.summaries {
        let pct = |x: f64| format!("{:.1}%", 100.0 * x);
        println!(
            "{:<8} {:<8} {:>5} {:>6} {:>6} {:>6} {:>6} {:>7} {:>7} {:>8.2} {:>8.2} {:>7.1}",
            m.label(),
            c,
            s.cases,
            pct(s.iou25),
            pct(s.iou50),
            pct(s.deg5_cm2),
            pct(s.deg5_cm5),
            pct(s.deg10_cm2),
            pct(s.deg10_cm5),
            s.mean_rotation_deg,
            s.mean_translation_cm,
            s.mean_time_ms
        );
    }
    println!(
        "\nheld-out procedural instances, one single-view scan each on a table ({} points, {} mm noise, {} % outliers); \
         rotation about y ignored for bottle, bowl, can and a mug whose handle is hidden (NOCS)",
        cfg.scene.points,
        1e3 * cfg.scene.noise,
        100.0 * cfg.scene.outliers
    );
    Ok(ExitCode::SUCCESS)
}

fn print_summaries(summaries: &[Summary], dof: Dof) {
    let scaled = dof != Dof::Rigid;
    println!(
        "{:<18} {:<9} {:>5} {:>8} {:>15} {:>8} {:>8} {:>9} {:>15}{}",
        "method",
        "object",
        "cases",
        "success",
        "rot mean/med °",
        "trans %d",
        "ADD-S %d",
        "ADD-S<10%",
        "ms mean/p95",
        if scaled { "  scale err %" } else { "" }
    );
    for s in summaries {
        let scale = if scaled { format!("  {:>11.2}", 100.0 * s.mean_scale_error) } else { String::new() };
        println!(
            "{:<18} {:<9} {:>5} {:>7.1}% {:>7.2}/{:<7.2} {:>8.3} {:>8.3} {:>8.1}% {:>7.1}/{:<7.1}{scale}",
            s.method.label(),
            s.object,
            s.cases,
            100.0 * s.success_rate,
            s.mean_rotation_deg,
            s.median_rotation_deg,
            100.0 * s.mean_translation,
            100.0 * s.mean_add_s,
            100.0 * s.add_s_accuracy,
            s.mean_time_ms,
            s.p95_time_ms
        );
    }
}

/// Writes every case's scan (`case-NNN-object.ply`) with its true pose (`case-NNN-object.json`), and the object
/// meshes (`object-NAME.ply`, in the coordinates the poses refer to), into `dir`.
fn save_cases(ctx: &Context, cfg: &BenchConfig, dir: &Path, force: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut count = 0;
    for (oi, name) in cfg.objects.iter().enumerate() {
        let object = shapes::builtin(name)?;
        let path = dir.join(format!("object-{name}.ply"));
        refuse_overwrite(&path, force)?;
        // In the object's source coordinates (the bunny's as in examples/bunny.ply).
        let cloud = PointCloud::new(object.mesh.vertices.iter().map(|p| p + object.source_offset).collect());
        ply::write_ply(&path, &cloud, &object.mesh.triangles, PlyEncoding::BinaryLittleEndian)?;
        let diameter = object.diameter();
        for c in 0..cfg.cases_per_object {
            let index = oi * cfg.cases_per_object + c;
            let case = bench::make_case(&object, diameter, index, cfg)?;
            let stem = format!("case-{index:03}-{name}");
            let (scan, truth) = (dir.join(format!("{stem}.ply")), dir.join(format!("{stem}.json")));
            refuse_overwrite(&scan, force)?;
            refuse_overwrite(&truth, force)?;
            ply::write_ply(&scan, &case.scene, &[], PlyEncoding::BinaryLittleEndian)?;
            let json = serde_json::json!({
                "scene": format!("{stem}.ply"),
                "object": format!("object-{name}.ply"),
                "pose": se3::matrix_rows(&se3::pose(
                    case.truth.rotation,
                    case.truth.translation.vector - case.truth.rotation * object.source_offset.component_mul(&case.scale)
                )),
                "scale": [case.scale.x, case.scale.y, case.scale.z],
                "viewpoint": [0.0, 0.0, 0.0],
                "feature_fraction": case.feature_fraction,
            });
            let text = serde_json::to_string_pretty(&json)? + "\n";
            ply::write_atomically(&truth, |w| std::io::Write::write_all(w, text.as_bytes()))?;
            count += 1;
        }
    }
    ctx.printer.info(format!("wrote {count} cases to {}", dir.display()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewpoint_parses_three_numbers() {
        assert_eq!(parse_point("0,0,0").unwrap(), [0.0, 0.0, 0.0]);
        assert_eq!(parse_point("-1.5, 2,3e-2").unwrap(), [-1.5, 2.0, 0.03]);
        assert!(parse_point("1,2").unwrap_err().contains("three"));
        assert!(parse_point("1,x,2").unwrap_err().contains("'x'"));
        assert!(parse_point("1,2,inf").is_err());
    }
}
