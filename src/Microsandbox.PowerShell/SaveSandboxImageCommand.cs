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

    /// <summary>
    /// <para type="description">References of the images to pull: python, 127.0.0.1:5000/app:1.0, name@sha256:... No wildcards.</para>
    /// </summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true,
        ValueFromPipelineByPropertyName = true)]
    [Alias("Reference")]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(SandboxImageCompleter))]
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
}
