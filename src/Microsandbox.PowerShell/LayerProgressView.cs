using System.Management.Automation;
using Microsandbox.Engine.Images.Registry;

namespace Microsandbox.PowerShell;

/// <summary>
/// One progress bar per layer under one for the image, written from the pipeline thread. Each
/// write is a new record, since hosts may keep the records they were given. The image's bar is
/// named by <paramref name="verb"/>: Pulling, or Importing for an image read from a file.
/// </summary>
internal sealed class LayerProgressView(Cmdlet cmdlet, string image, string verb = "Pulling")
{
    private const int ImageActivity = 1;

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
        cmdlet.WriteProgress(new ProgressRecord(ImageActivity, $"{verb} {image}",
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

        cmdlet.WriteProgress(new ProgressRecord(ImageActivity, $"{verb} {image}", "Done")
        {
            RecordType = ProgressRecordType.Completed,
        });
    }

    private static string LayerActivity(string digest) => $"Layer {digest[..19]}";

    private static int Percent(long done, long total) =>
        total <= 0 ? 100 : (int)Math.Clamp(done * 100 / total, 0, 100);
}
