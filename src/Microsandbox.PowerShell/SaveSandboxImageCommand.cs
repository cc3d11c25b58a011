using System.Management.Automation;
using Microsandbox.Engine;
using Microsandbox.Engine.Images.Registry;

namespace Microsandbox.PowerShell;

/// <summary>
/// <para type="synopsis">Pulls images into the layer cache ahead of time.</para>
/// <para type="description">Pulls each image from its registry into the layer cache and builds its EROFS base, so that New-Sandbox starts without waiting for a download. Progress is shown per layer, in bytes.</para>
/// </summary>
[Cmdlet(VerbsData.Save, "SandboxImage", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low)]
[OutputType(typeof(SandboxImageInfo))]
public sealed class SaveSandboxImageCommand : SandboxCmdlet
{
    private const int ImageActivity = 1;

    /// <summary>
    /// <para type="description">References of the images to pull: python, 127.0.0.1:5000/app:1.0, name@sha256:... No wildcards.</para>
    /// </summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true,
        ValueFromPipelineByPropertyName = true)]
    [Alias("Reference")]
    [ValidateNotNullOrEmpty]
    public string[] Name { get; set; } = [];

    /// <summary>
    /// <para type="description">Ask the registry even when the image is cached, so that a moved tag is followed. Without it, a cached image is left as it is.</para>
    /// </summary>
    [Parameter]
    public SwitchParameter Force { get; set; }

    /// <summary>
    /// <para type="description">Write the pulled image's description to the pipeline.</para>
    /// </summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    /// <inheritdoc/>
    protected override void ProcessRecord()
    {
        foreach (string name in Name)
        {
            if (!ShouldProcess(name, Force ? "Pull image again" : "Pull image if not cached"))
            {
                continue;
            }

            var view = new LayerProgressView(this, name);
            try
            {
                SandboxImageInfo image = RunWithLayers((messages, layers, token) =>
                    Engine.Images.PullAsync(name, Force ? PullPolicy.Always : PullPolicy.IfMissing, layers,
                        messages, token), view.Update);
                if (PassThru)
                {
                    WriteObject(image);
                }
            }
            catch (SandboxException ex)
            {
                WriteSandboxError(ex);
            }
            finally
            {
                // A stopping pipeline refuses writes, and its host clears the bars itself.
                if (!Stopping)
                {
                    view.Complete();
                }
            }
        }
    }

    /// <summary>
    /// One progress bar per layer under one for the image, written from the pipeline thread. Each
    /// write is a new record, since hosts may keep the records they were given.
    /// </summary>
    private sealed class LayerProgressView(Cmdlet cmdlet, string image)
    {
        private readonly Dictionary<string, (int Id, long Done, long Total)> _layers =
            new(StringComparer.Ordinal);

        public void Update(LayerProgress report)
        {
            bool known = _layers.TryGetValue(report.Digest, out var layer);
            int id = known ? layer.Id : ImageActivity + 1 + _layers.Count;
            int percent = Percent(report.BytesDone, report.BytesTotal);
            bool changed = !known || percent != Percent(layer.Done, layer.Total);
            _layers[report.Digest] = (id, report.BytesDone, report.BytesTotal);
            if (!changed && report.BytesDone != report.BytesTotal)
            {
                return;
            }

            long done = _layers.Values.Sum(l => l.Done);
            long total = _layers.Values.Sum(l => l.Total);
            cmdlet.WriteProgress(new ProgressRecord(ImageActivity, $"Pulling {image}",
                $"{done:N0} of {total:N0} bytes in {_layers.Count} layer(s) so far")
            {
                PercentComplete = Percent(done, total),
            });
            cmdlet.WriteProgress(new ProgressRecord(id, LayerActivity(report.Digest),
                $"{report.BytesDone:N0} of {report.BytesTotal:N0} bytes")
            {
                ParentActivityId = ImageActivity,
                PercentComplete = percent,
            });
        }

        public void Complete()
        {
            foreach (var (digest, layer) in _layers)
            {
                cmdlet.WriteProgress(new ProgressRecord(layer.Id, LayerActivity(digest), "Done")
                {
                    ParentActivityId = ImageActivity,
                    RecordType = ProgressRecordType.Completed,
                });
            }

            cmdlet.WriteProgress(new ProgressRecord(ImageActivity, $"Pulling {image}", "Done")
            {
                RecordType = ProgressRecordType.Completed,
            });
        }

        private static string LayerActivity(string digest) => $"Layer {digest[..19]}";

        private static int Percent(long done, long total) =>
            total <= 0 ? 100 : (int)Math.Clamp(done * 100 / total, 0, 100);
    }
}
