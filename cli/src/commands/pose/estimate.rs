//! `diffuse pose estimate`: the pose of a known object (or the pose and size of a category) in a scan.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::Args;
use diffuse_core::batch::{ListEntry, Progress, Status};
use diffuse_pose::category::Category;
use diffuse_pose::category::baseline::pca_box;
use diffuse_pose::ply::{self, PlyEncoding};
use diffuse_pose::registration::{self, Dof, Estimate, EstimateConfig, IcpSurrogate};
use diffuse_pose::{PointCloud, se3};

use super::super::Context;
use super::super::manifest::{BatchArgs, BatchRun};
use super::{MODEL_SAMPLES, ProcessArgs, estimate_config, parse_point};

/// Arguments of `diffuse pose estimate`.
#[derive(Debug, Args)]
pub struct EstimateArgs {
    /// The scan (PLY), ideally cropped to the object; or a folder of scans (batch mode: needs -o OUTDIR).
    #[arg(value_name = "SCENE.ply|DIR", required_unless_present = "list")]
    pub scene: Option<PathBuf>,
    /// The object model (PLY point cloud or mesh) whose pose is wanted.
    #[arg(long, value_name = "MODEL.ply")]
    pub object: Option<PathBuf>,
    /// No object model: estimate the pose and size of an object of this category (bottle, bowl, can, mug, box,
    /// laptop) standing on a table in the scan (metres, sensor at --viewpoint, default 0,0,0) with the learned
    /// category-level model (docs/pose.md, "Category level"); -o writes the box as a PLY mesh.
    #[arg(long, value_name = "NAME", conflicts_with = "object")]
    pub category: Option<String>,
    /// The category-level model (M.safetensors with M.json beside it; default: the built-in one).
    #[arg(long, value_name = "M.safetensors", requires = "category")]
    pub model: Option<PathBuf>,
    /// With --category: the PCA-box baseline instead of the learned model.
    #[arg(long, requires = "category", conflicts_with = "model")]
    pub pca_box: bool,
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

pub(super) fn estimate(ctx: &Context, args: &EstimateArgs) -> anyhow::Result<ExitCode> {
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

/// `pose estimate SCENE --category NAME`: pose and size of an unseen object of a known category.
pub(super) fn estimate_category(ctx: &Context, args: &EstimateArgs, name: &str) -> anyhow::Result<ExitCode> {
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
    let (est, estimator, extra) = if args.pca_box {
        let start = Instant::now();
        let est = pca_box(&scene, &viewpoint, category, ctx.global.seed)
            .with_context(|| format!("estimating the {category} in {scene_name}"))?;
        (est, "pca-box", serde_json::json!({"time_ms": start.elapsed().as_secs_f64() * 1e3}))
    } else {
        let model = super::load_category_model(ctx, args.model.as_deref())?;
        let opts = super::category_options(ctx, &args.process)?;
        let start = Instant::now();
        let e = model
            .estimate(&scene, &viewpoint, category, &opts)
            .with_context(|| format!("estimating the {category} in {scene_name}"))?;
        let time_ms = start.elapsed().as_secs_f64() * 1e3;
        let extra = serde_json::json!({
            "time_ms": time_ms,
            "support": e.support,
            "hypotheses": e.hypotheses.len(),
            "network_evaluations": e.nfe,
        });
        (e.best, "diffusion", extra)
    };
    let time_ms = extra["time_ms"].as_f64().unwrap_or(f64::NAN);
    if let Some(out) = &args.output {
        let mesh = est.box_mesh();
        let cloud = PointCloud::new(mesh.vertices.clone());
        ply::write_ply_new(out, &cloud, &mesh.triangles, PlyEncoding::BinaryLittleEndian, args.force)?;
        ctx.printer.info(format!("wrote {} (the box, to open next to the scan)", out.display()));
    }
    let corners: Vec<[f64; 3]> = est.corners().iter().map(|p| [p.x, p.y, p.z]).collect();
    if args.json {
        let mut json = serde_json::json!({
            "category": category,
            "estimator": estimator,
            "pose": se3::matrix_rows(&est.pose),
            "size": [est.size.x, est.size.y, est.size.z],
            "corners": corners,
        });
        if let (Some(j), Some(x)) = (json.as_object_mut(), extra.as_object()) {
            j.extend(x.clone());
        }
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        println!("{category} ({estimator} estimator): pose (canonical → scene; +y up, origin at the box centre):");
        for row in se3::matrix_rows(&est.pose) {
            println!("  {:>12.6} {:>12.6} {:>12.6} {:>12.6}", row[0], row[1], row[2], row[3]);
        }
        println!(
            "size         [{:.4}, {:.4}, {:.4}]  w, h, d of the tight box (scene units)",
            est.size.x, est.size.y, est.size.z
        );
        if let Some(support) = extra["support"].as_f64() {
            println!(
                "support      {:.0} % of {} hypotheses agree (within 5° and 2 cm)",
                100.0 * support,
                extra["hypotheses"]
            );
        }
        println!("time         {time_ms:.1} ms");
    }
    Ok(ExitCode::SUCCESS)
}

/// The estimator's defaults with the sensor viewpoint of `args`.
pub(super) fn base_config(args: &EstimateArgs) -> EstimateConfig {
    EstimateConfig {
        viewpoint: args.viewpoint.map(|[x, y, z]| diffuse_pose::nalgebra::Point3::new(x, y, z)),
        ..EstimateConfig::default()
    }
}

/// The object model as read and the point cloud the estimator registers (sampled from a mesh), validated.
pub(super) fn load_object(path: &Path, seed: u64) -> anyhow::Result<(ply::PlyData, PointCloud)> {
    let object_data = ply::read_ply(path)?;
    let object_name = path.display().to_string();
    let object = object_data.model_cloud(&object_name, MODEL_SAMPLES, seed)?;
    object.validate(&object_name, registration::MIN_POINTS)?;
    Ok((object_data, object))
}

/// The model as given (mesh faces kept), moved into the scene and coloured by support, written to `out`.
pub(super) fn write_aligned(
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
pub(super) struct SceneJob {
    input: PathBuf,
    json: PathBuf,
    aligned: PathBuf,
}

/// The scenes of a batch: the .ply files of a folder (not recursive) and the lines of --list.
pub(super) fn plan_scenes(args: &EstimateArgs, out_dir: &Path) -> anyhow::Result<Vec<SceneJob>> {
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
pub(super) fn estimate_batch(ctx: &Context, args: &EstimateArgs, object_path: &Path) -> anyhow::Result<ExitCode> {
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

pub(super) fn estimate_json(est: &Estimate) -> serde_json::Value {
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

pub(super) fn print_estimate(est: &Estimate) {
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
