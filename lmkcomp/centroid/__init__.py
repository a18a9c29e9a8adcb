"""The centroid method of Boiarov & Tyantov (CIKM 2019): a few centroids per landmark
from agglomerative clustering of its train embeddings (`build`), kept in a faiss inner-product
index (`index`), and recognition by Algorithm 2: threshold eta, top-k landmarks, optional geo
scope, references check and same-city rule (`inference`, `metadata`)."""

from lmkcomp.centroid.build import ClusteringConfig, build_centroids, landmark_centroids
from lmkcomp.centroid.index import CentroidIndex, load_centroids
from lmkcomp.centroid.inference import InferenceConfig, Recognitions, recognize
from lmkcomp.centroid.metadata import LandmarkMetadata, read_image_coordinates, read_landmark_metadata

__all__ = [
    "CentroidIndex",
    "ClusteringConfig",
    "InferenceConfig",
    "LandmarkMetadata",
    "Recognitions",
    "build_centroids",
    "landmark_centroids",
    "load_centroids",
    "read_image_coordinates",
    "read_landmark_metadata",
    "recognize",
]
